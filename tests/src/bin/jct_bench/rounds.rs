//! Enqueue c=N in rounds, each round running every variant in turn against an
//! intake of its own (fresh database), each figure a ratio to the round's first
//! variant: so drift on the shared machine hits a variant and its baseline alike.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;

use super::{
    Call, OperatorServiceClient, channels, closed_loop, free_port, pb, sha256_hex,
    start_intake_with, with_token,
};

const BENCH_TOKEN: &str = "bench-operator-token";

#[derive(clap::Args, Clone, Copy)]
pub struct Load {
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// How a variant calls the intake.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Guard {
    Open,
    Token,
    TokenMtls,
}

/// What runs beside the Enqueue callers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Beside {
    Nothing,
    /// One operator paging `ListAuditEvents` (100 a page) in a loop, this many
    /// pages a second (0: as fast as answered).
    AuditReader(u32),
    /// `GET /metrics` once a second.
    Scraper,
}

#[derive(Clone, Copy)]
struct Variant {
    name: &'static str,
    guard: Guard,
    beside: Beside,
    call: Call,
}

pub async fn bench_identity(
    bin_dir: &Path,
    backend: &str,
    load: &Load,
    audit_reader: Option<u32>,
) -> anyhow::Result<()> {
    let mut variants = vec![
        variant("open", Guard::Open, Beside::Nothing, Call::Enqueue),
        variant("token", Guard::Token, Beside::Nothing, Call::Enqueue),
        variant(
            "token+mTLS",
            Guard::TokenMtls,
            Beside::Nothing,
            Call::Enqueue,
        ),
    ];
    if let Some(rate) = audit_reader {
        variants.push(variant(
            "token+audit",
            Guard::Token,
            Beside::AuditReader(rate),
            Call::Enqueue,
        ));
        variants.push(variant(
            "mTLS+audit",
            Guard::TokenMtls,
            Beside::AuditReader(rate),
            Call::Enqueue,
        ));
    }
    run_rounds(bin_dir, backend, load, &variants).await
}

pub async fn bench_poison(bin_dir: &Path, backend: &str, load: &Load) -> anyhow::Result<()> {
    let variants = [
        variant("clean", Guard::Open, Beside::Nothing, Call::Enqueue),
        variant(
            "1%poison",
            Guard::Open,
            Beside::Nothing,
            Call::EnqueuePoisoned,
        ),
    ];
    run_rounds(bin_dir, backend, load, &variants).await
}

pub async fn bench_metrics(bin_dir: &Path, backend: &str, load: &Load) -> anyhow::Result<()> {
    let variants = [
        variant("no-metrics", Guard::Open, Beside::Nothing, Call::Enqueue),
        variant("scraped/1s", Guard::Open, Beside::Scraper, Call::Enqueue),
    ];
    run_rounds(bin_dir, backend, load, &variants).await
}

fn variant(name: &'static str, guard: Guard, beside: Beside, call: Call) -> Variant {
    Variant {
        name,
        guard,
        beside,
        call,
    }
}

async fn run_rounds(
    bin_dir: &Path,
    backend: &str,
    load: &Load,
    variants: &[Variant],
) -> anyhow::Result<()> {
    let pki_dir = tempfile::tempdir()?;
    let ca = jct::test_pki::TestCa::new("jct bench CA")?;
    let ca_file = ca.write_cert(pki_dir.path(), "ca")?;
    let server = ca.write_issued(pki_dir.path(), "intake", &["127.0.0.1"])?;
    let (client_cert, client_key) = ca.issue(&["bench-client"])?;
    let tokens = pki_dir.path().join("tokens.csv");
    // hashed, as an operator's file would be
    std::fs::write(
        &tokens,
        format!("sha256:{},bench,operator\n", sha256_hex(BENCH_TOKEN)),
    )?;
    let duration = Duration::from_secs(load.seconds);
    println!(
        "backend={backend} concurrency={} duration={}s rounds={} load_average={} (Enqueue; audit rows written by trigger in every variant)",
        load.concurrency,
        load.seconds,
        load.rounds,
        load_average()
    );
    println!(
        "{:<6} {:<12} {:>10} {:>9} {:>9} {:>8} {:>7}  beside",
        "round", "variant", "req/s", "p50(ms)", "p99(ms)", "ratio", "errors"
    );
    let mut totals = vec![0f64; variants.len()];
    for round in 1..=load.rounds {
        let mut base_rate = 0.0;
        for (index, variant) in variants.iter().enumerate() {
            let mut env: Vec<(&str, String)> = Vec::new();
            let mut health_port = None;
            if variant.guard != Guard::Open {
                env.push(("JCT_AUTH_TOKENS_FILE", tokens.display().to_string()));
            }
            if variant.guard == Guard::TokenMtls {
                env.push(("JCT_TLS_CERT_FILE", server.cert.display().to_string()));
                env.push(("JCT_TLS_KEY_FILE", server.key.display().to_string()));
                env.push(("JCT_TLS_CLIENT_CA_FILE", ca_file.display().to_string()));
                health_port = Some(free_port()?);
            }
            let metrics_port = free_port()?;
            if variant.beside == Beside::Scraper {
                env.push(("JCT_METRICS_ADDR", format!("127.0.0.1:{metrics_port}")));
            }
            let (intake, address) = start_intake_with(bin_dir, backend, &env, health_port).await?;
            let channels = match variant.guard {
                Guard::TokenMtls => {
                    let tls = tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(ca.cert_pem()))
                        .identity(tonic::transport::Identity::from_pem(
                            &client_cert,
                            &client_key,
                        ));
                    let address = address.replacen("http://", "https://", 1);
                    let mut channels = Vec::new();
                    for _ in 0..4 {
                        channels.push(
                            Channel::from_shared(address.clone())?
                                .tls_config(tls.clone())?
                                .tcp_nodelay(true)
                                .connect()
                                .await?,
                        );
                    }
                    channels
                }
                Guard::Open | Guard::Token => channels(&address, 4).await?,
            };
            let token = (variant.guard != Guard::Open).then_some(BENCH_TOKEN);
            let ids = Arc::new(vec![String::new()]);
            // warm-up: connections, the first transactions
            closed_loop(
                &channels,
                variant.call,
                load.concurrency,
                Duration::from_secs(1),
                ids.clone(),
                token,
            )
            .await?;
            let stop = Arc::new(AtomicBool::new(false));
            let side = match variant.beside {
                Beside::Nothing => None,
                Beside::AuditReader(rate) => Some(tokio::spawn(audit_reader(
                    channels[0].clone(),
                    token.map(str::to_owned),
                    rate,
                    stop.clone(),
                ))),
                Beside::Scraper => Some(tokio::spawn(scraper(metrics_port, stop.clone()))),
            };
            let measured = closed_loop(
                &channels,
                variant.call,
                load.concurrency,
                duration,
                ids,
                token,
            )
            .await?;
            stop.store(true, Ordering::Relaxed);
            let beside = match side {
                Some(side) => side.await??,
                None => String::new(),
            };
            if index == 0 {
                base_rate = measured.per_second;
            }
            totals[index] += measured.per_second;
            println!(
                "{:<6} {:<12} {:>10.0} {:>9.3} {:>9.3} {:>7.1}% {:>7}  {}",
                round,
                variant.name,
                measured.per_second,
                measured.p50_us as f64 / 1000.0,
                measured.p99_us as f64 / 1000.0,
                100.0 * measured.per_second / base_rate,
                measured.errors,
                beside
            );
            intake.stop().await;
        }
    }
    let rounds = load.rounds as f64;
    let summary: Vec<String> = variants
        .iter()
        .zip(&totals)
        .map(|(variant, total)| {
            format!(
                "{} {:.0} req/s ({:.1} %)",
                variant.name,
                total / rounds,
                100.0 * total / totals[0]
            )
        })
        .collect();
    println!(
        "mean over {} rounds: {} load_average={}",
        load.rounds,
        summary.join(", "),
        load_average()
    );
    Ok(())
}

/// One operator paging the audit trail: 20 pages of 100 from the newest, then
/// again from the top, until stopped, as fast as answered or at a set pace.
/// Returns pages/s and page p50/p99.
async fn audit_reader(
    channel: Channel,
    token: Option<String>,
    pages_per_second: u32,
    stop: Arc<AtomicBool>,
) -> anyhow::Result<String> {
    let mut pace = (pages_per_second > 0)
        .then(|| tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(pages_per_second))));
    let authorization: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = match token
    {
        Some(token) => Some(format!("Bearer {token}").parse()?),
        None => None,
    };
    let mut operator = OperatorServiceClient::new(channel);
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut events = 0u64;
    let started = Instant::now();
    let mut page_token = String::new();
    let mut pages_from_top = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(pace) = pace.as_mut() {
            pace.tick().await;
        }
        let request = pb::ListAuditEventsRequest {
            page_size: 100,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let asked = Instant::now();
        let page = operator
            .list_audit_events(with_token(request, &authorization))
            .await
            .context("ListAuditEvents")?
            .into_inner();
        histogram.record(asked.elapsed().as_micros() as u64)?;
        events += page.events.len() as u64;
        pages_from_top += 1;
        page_token = page.next_page_token;
        if page_token.is_empty() || pages_from_top >= 20 {
            page_token.clear();
            pages_from_top = 0;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(format!(
        "ListAuditEvents {:.0} pages/s ({:.0} events/s) p50={:.3}ms p99={:.3}ms",
        histogram.len() as f64 / seconds,
        events as f64 / seconds,
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.value_at_quantile(0.99) as f64 / 1000.0
    ))
}

/// `GET /metrics` every second, as Prometheus would, until stopped.
async fn scraper(port: u16, stop: Arc<AtomicBool>) -> anyhow::Result<String> {
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut bytes = 0;
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        let asked = Instant::now();
        let body = scrape(port).await?;
        histogram.record(asked.elapsed().as_micros() as u64)?;
        bytes = body.len();
    }
    Ok(format!(
        "{} scrapes p50={:.3}ms max={:.3}ms {} bytes",
        histogram.len(),
        histogram.value_at_quantile(0.5) as f64 / 1000.0,
        histogram.max() as f64 / 1000.0,
        bytes
    ))
}

/// One `GET /metrics` over HTTP/1.1; the body, checked to be a 200.
pub async fn scrape(port: u16) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let response = String::from_utf8_lossy(&response).into_owned();
    anyhow::ensure!(
        response.starts_with("HTTP/1.1 200"),
        "scrape answered {}",
        response.lines().next().unwrap_or("nothing")
    );
    Ok(response)
}

/// The 1-minute load average, to note beside each run.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}
