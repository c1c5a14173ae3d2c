//! Every RPC of a real intake, over real gRPC, fed arbitrary bytes and arbitrary
//! well-formed but hostile messages (control, bidi and invisible characters,
//! NUL, option-like names, deep and wide documents, stray ids and tokens), while
//! an honest client keeps enqueueing and reading in parallel. Whatever arrives:
//! the intake does not panic, never answers UNKNOWN or INTERNAL, and the honest
//! client never fails — on SQLite and on Postgres.
//!
//! Bounded case counts keep it a CI test (seconds, not minutes); the cases are
//! random per run, so every CI run explores new inputs.

mod support;

use jct_migrations::on_both_backends;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use jct::v1 as pb;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use prost_types::value::Kind;
use prost_types::{ListValue, Struct, Value};
use support::{TestIntake, enqueue_request};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;
use tonic::{Code, Status};

on_both_backends!(
    arbitrary_bytes_at_every_rpc_are_answered_cleanly,
    hostile_messages_at_every_rpc_are_answered_cleanly,
);

/// Cases per property and backend.
const CASES: u32 = 48;
/// A hang is a failure too; no answer here should take more than this.
const HANG_GUARD: Duration = Duration::from_secs(20);

type TaskClient = pb::task_service_client::TaskServiceClient<Channel>;

const UNARY: &[&str] = &[
    "/jct.v1.TaskService/Enqueue",
    "/jct.v1.TaskService/GetTask",
    "/jct.v1.TaskService/ListTasks",
    "/jct.v1.TaskService/UpdateStatus",
    "/jct.v1.OperatorService/GetVersion",
    "/jct.v1.OperatorService/GetSystemStatus",
    "/jct.v1.OperatorService/ListAuditEvents",
];
const WATCH: &str = "/jct.v1.TaskService/WatchTask";
const ATTACH: &str = "/jct.v1.DispatchService/Attach";

/// The lists above name every method of the contract, each by its kind: an RPC
/// added to the proto without being added here fails this test.
#[test]
fn every_rpc_of_the_contract_is_fuzzed() {
    let set = prost_types::FileDescriptorSet::decode(jct::v1::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let mut contract = Vec::new();
    for file in set.file.iter().filter(|f| f.package() == "jct.v1") {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/jct.v1.{}/{}", service.name(), method.name());
                let kind = match (method.client_streaming(), method.server_streaming()) {
                    (false, false) => "unary",
                    (false, true) => "server streaming",
                    (true, true) => "bidirectional",
                    (true, false) => "client streaming",
                };
                contract.push((path, kind));
            }
        }
    }
    contract.sort();
    let mut fuzzed: Vec<(String, &str)> = UNARY
        .iter()
        .map(|path| (path.to_string(), "unary"))
        .chain([
            (WATCH.to_string(), "server streaming"),
            (ATTACH.to_string(), "bidirectional"),
        ])
        .collect();
    fuzzed.sort();
    assert_eq!(fuzzed, contract);
}

// === a codec that sends bytes as they are ===

#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct RawDecoder;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        Ok(Some(bytes.to_vec()))
    }
}

// === what every answer must satisfy ===

fn clean_status(method: &str, status: &Status) -> Result<(), TestCaseError> {
    prop_assert!(
        !matches!(status.code(), Code::Unknown | Code::Internal),
        "{method} answered {:?}: {}",
        status.code(),
        status.message()
    );
    prop_assert!(
        jct::text::text_problem(status.message()).is_none(),
        "{method} answered with hostile text: {:?}",
        status.message()
    );
    Ok(())
}

/// Sends `body` to a unary method and checks the answer.
async fn unary(
    channel: &Channel,
    method: &'static str,
    body: Vec<u8>,
) -> Result<(), TestCaseError> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| TestCaseError::fail(format!("channel not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    match grpc.unary(tonic::Request::new(body), path, RawCodec).await {
        Ok(_) => Ok(()),
        Err(status) => clean_status(method, &status),
    }
}

/// Sends `messages` on a stream to `method` (a server- or bidi-streaming one),
/// closes its side, and reads the answers to the end.
async fn streaming(
    channel: &Channel,
    method: &'static str,
    messages: Vec<Vec<u8>>,
) -> Result<Vec<Vec<u8>>, TestCaseError> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| TestCaseError::fail(format!("channel not ready: {e}")))?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    let answer = if method == WATCH {
        let first = messages.into_iter().next().unwrap_or_default();
        grpc.server_streaming(tonic::Request::new(first), path, RawCodec)
            .await
    } else {
        grpc.streaming(
            tonic::Request::new(futures::stream::iter(messages)),
            path,
            RawCodec,
        )
        .await
    };
    let mut inbound = match answer {
        Ok(response) => response.into_inner(),
        Err(status) => {
            clean_status(method, &status)?;
            return Ok(Vec::new());
        }
    };
    let mut received = Vec::new();
    // a watch on a live task streams until the task ends: the first answer is
    // the one this property is about
    while let Some(item) = inbound.next().await {
        match item {
            Ok(bytes) => received.push(bytes),
            Err(status) => {
                clean_status(method, &status)?;
                break;
            }
        }
        if method == WATCH {
            break;
        }
    }
    Ok(received)
}

/// The dispatch stream's answers to a worker: acknowledgements say why in
/// text that is safe to show.
fn check_dispatch_answers(answers: &[Vec<u8>]) -> Result<(), TestCaseError> {
    for bytes in answers {
        let message = pb::DispatchMessage::decode(bytes.as_slice())
            .map_err(|e| TestCaseError::fail(format!("undecodable answer: {e}")))?;
        if let Some(pb::dispatch_message::Kind::ReportAck(ack)) = message.kind {
            prop_assert!(ack.accepted || !ack.reason.is_empty(), "{ack:?}");
            prop_assert!(
                jct::text::text_problem(&ack.message).is_none(),
                "ack with hostile text: {ack:?}"
            );
        }
    }
    Ok(())
}

// === an honest client beside the attacker ===

/// Enqueues and reads back until stopped; counts round trips, and fails loudly
/// on the first error.
struct Honest {
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Honest {
    fn start(intake: &TestIntake) -> Honest {
        let stop = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let mut client = intake.client.clone();
        let (stopping, counting) = (stop.clone(), rounds.clone());
        let task = tokio::spawn(async move {
            while !stopping.load(Ordering::Relaxed) {
                let n = counting.load(Ordering::Relaxed);
                round_trip(&mut client, n).await?;
                counting.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        });
        Honest { stop, rounds, task }
    }

    /// Stops the honest client; it must have completed rounds and never failed.
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        let outcome = self.task.await.expect("honest client task");
        assert_eq!(outcome, Ok(()), "the honest client was affected");
        assert!(
            self.rounds.load(Ordering::Relaxed) > 0,
            "the honest client never completed a round"
        );
    }
}

async fn round_trip(client: &mut TaskClient, n: usize) -> Result<(), String> {
    let objective = format!("Honest task number {n}");
    let created = client
        .enqueue(enqueue_request(&objective))
        .await
        .map_err(|status| format!("honest enqueue {n} failed: {status:?}"))?
        .into_inner();
    let task = client
        .get_task(pb::GetTaskRequest {
            task_id: created.task_id,
        })
        .await
        .map_err(|status| format!("honest get {n} failed: {status:?}"))?
        .into_inner();
    if task.objective != objective {
        return Err(format!("honest task {n} came back as {task:?}"));
    }
    Ok(())
}

/// Runs `property` for every generated input on the current multi-threaded
/// runtime (proptest's runner is synchronous).
fn run_cases<S, F, Fut>(strategy: S, property: F)
where
    S: Strategy,
    S::Value: Clone,
    F: Fn(S::Value) -> Fut,
    Fut: Future<Output = Result<(), TestCaseError>>,
{
    let handle = tokio::runtime::Handle::current();
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        // shrinking replays cases against the live intake: keep it short
        max_shrink_iters: 64,
        ..Config::default()
    });
    let outcome = tokio::task::block_in_place(|| {
        runner.run(&strategy, |input| {
            handle.block_on(async {
                tokio::time::timeout(HANG_GUARD, property(input))
                    .await
                    .unwrap_or_else(|_| Err(TestCaseError::fail("no answer: the call hung")))
            })
        })
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

// === arbitrary bytes ===

/// Bytes that are mostly nonsense, sometimes a real message with a few bytes
/// flipped or cut (which reaches deeper into the decoder).
fn body() -> impl Strategy<Value = Vec<u8>> {
    let valid = enqueue_request("A valid request to mutate").encode_to_vec();
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..256),
        2 => (proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6), any::<prop::sample::Index>())
            .prop_map(move |(flips, cut)| {
                let mut bytes = valid.clone();
                for (at, byte) in flips {
                    let i = at.index(bytes.len());
                    bytes[i] = byte;
                }
                bytes.truncate(cut.index(bytes.len() + 1));
                bytes
            }),
        1 => Just(Vec::new()),
    ]
}

async fn arbitrary_bytes_at_every_rpc_are_answered_cleanly(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let channel = intake.channel().await;
    let honest = Honest::start(&intake);
    let strategy = (0..UNARY.len() + 2, proptest::collection::vec(body(), 1..4));
    run_cases(strategy, |(method, bodies)| {
        let channel = channel.clone();
        async move {
            match UNARY.get(method) {
                Some(method) => {
                    for body in bodies {
                        unary(&channel, method, body).await?;
                    }
                }
                None if method == UNARY.len() => {
                    streaming(&channel, WATCH, bodies).await?;
                }
                None => {
                    let answers = streaming(&channel, ATTACH, bodies).await?;
                    check_dispatch_answers(&answers)?;
                }
            }
            Ok(())
        }
    });
    honest.finish().await;
    intake.stop().await;
}

// === well-formed, hostile messages ===

/// Text meant to break things: attacks on terminals and logs, names git could
/// read as options, ids that are almost ids, and plain random text.
fn hostile() -> BoxedStrategy<String> {
    let attack = prop::sample::select(vec![
        "\0",
        "\u{1b}[2J\u{1b}[H",
        "\u{1b}]8;;https://evil.example\u{1b}\\x\u{1b}]8;;\u{1b}\\",
        "\u{202E}",
        "\u{2066}",
        "\u{200B}",
        "\u{FEFF}",
        "\u{E0041}",
        "\n2026-12-03T07:00:00Z  INFO forged",
        "\r",
        "\u{2028}",
        "\u{85}",
        "\\",
        "--upload-pack=touch /tmp/x",
        "../../etc/passwd",
        "myorg/service",
        "main",
        "completed",
        "cancelled",
        "released",
        "agent",
        "code_change",
        "00000000-0000-0000-0000-000000000000",
        "0190f5e2-7b2c-7e3a-9a1b-2c3d4e5f6a7b",
        "",
    ]);
    prop_oneof![
        3 => (".{0,8}", attack.clone(), ".{0,8}").prop_map(|(a, b, c)| format!("{a}{b}{c}")),
        2 => attack.prop_map(str::to_string),
        2 => any::<String>(),
        1 => (1usize..3000, ".").prop_map(|(n, s)| s.repeat(n)),
    ]
    .boxed()
}

fn hostile_value(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Kind::NullValue(0)),
        any::<bool>().prop_map(Kind::BoolValue),
        any::<f64>().prop_map(Kind::NumberValue),
        hostile().prop_map(Kind::StringValue),
    ];
    if depth == 0 {
        return leaf.prop_map(|kind| Value { kind: Some(kind) }).boxed();
    }
    prop_oneof![
        2 => leaf.prop_map(|kind| Value { kind: Some(kind) }),
        1 => hostile_struct(depth - 1).prop_map(|s| Value { kind: Some(Kind::StructValue(s)) }),
        1 => proptest::collection::vec(hostile_value(depth - 1), 0..3)
            .prop_map(|values| Value { kind: Some(Kind::ListValue(ListValue { values })) }),
    ]
    .boxed()
}

fn hostile_struct(depth: u32) -> BoxedStrategy<Struct> {
    prop_oneof![
        6 => proptest::collection::btree_map(hostile(), hostile_value(depth), 0..4)
            .prop_map(|fields| Struct { fields }),
        // deeper than any limit, and deeper than prost decodes
        1 => (1usize..160).prop_map(nested),
    ]
    .boxed()
}

fn nested(depth: usize) -> Struct {
    let mut inner = Struct::default();
    for _ in 0..depth {
        inner = Struct {
            fields: [(
                "a".to_string(),
                Value {
                    kind: Some(Kind::StructValue(inner)),
                },
            )]
            .into(),
        };
    }
    inner
}

prop_compose! {
    fn hostile_enqueue()(
        (base, objective, id, label) in (hostile(), hostile(), hostile(), proptest::option::of(hostile())),
        (kind, operation, repo, ref_name, path) in (hostile(), hostile(), hostile(), hostile(), hostile()),
        (key, version) in (proptest::option::of(hostile()), prop_oneof![Just(String::new()), hostile()]),
        inputs in proptest::option::of(hostile_struct(3)), metadata in proptest::option::of(hostile_struct(3)),
        budget in proptest::option::of(any::<i32>()), validate_only in any::<bool>(),
        which in 0usize..4,
    ) -> pb::EnqueueRequest {
        // mostly one hostile field in an otherwise valid request, so the attack
        // reaches the rule that must stop it
        let mut request = enqueue_request("A valid objective to attack");
        match which {
            0 => request.objective = format!("Valid start {objective}"),
            1 => if let Some(requester) = &mut request.requested_by {
                requester.id = id;
                requester.label = label;
            },
            2 => request.target = Some(pb::Target { repo: format!("myorg/{repo}"), r#ref: ref_name, path, ..Default::default() }),
            _ => {
                request.version = version;
                request.idempotency_key = key;
                request.operation = operation;
                request.requested_by = Some(pb::RequestedBy { kind, id: base, label: None });
                request.constraints = Some(pb::Constraints { time_budget_seconds: budget, ..Default::default() });
            }
        }
        request.inputs = inputs;
        request.metadata = metadata;
        request.validate_only = validate_only;
        request
    }
}

fn hostile_report() -> impl Strategy<Value = pb::TaskReport> {
    (
        any::<u64>(),
        hostile(),
        hostile(),
        hostile(),
        proptest::option::of(hostile_struct(2)),
        proptest::option::of((hostile(), hostile())),
        hostile(),
        any::<i32>(),
    )
        .prop_map(
            |(report_id, task_id, lease_token, legacy, result, error, trace_uri, status)| {
                // the previous release's spelling is hostile input too
                #[allow(deprecated)]
                pb::TaskReport {
                    report_id,
                    task_id,
                    lease_token,
                    legacy_status: legacy,
                    result,
                    error: error.map(|(code, message)| pb::TaskError { code, message }),
                    trace_uri,
                    status,
                }
            },
        )
}

fn hostile_worker_message() -> impl Strategy<Value = pb::WorkerMessage> {
    use pb::worker_message::Kind as Out;
    let lease = (hostile(), hostile()).prop_map(|(task_id, lease_token)| pb::LeaseRef {
        task_id,
        lease_token,
    });
    prop_oneof![
        4 => hostile_report().prop_map(Out::Report),
        1 => proptest::collection::vec(lease, 0..4)
            .prop_map(|leases| Out::Heartbeat(pb::Heartbeat { leases })),
        1 => Just(Out::Drain(pb::Drain::default())),
        1 => hostile_hello().prop_map(Out::Hello),
    ]
    .prop_map(|kind| pb::WorkerMessage { kind: Some(kind) })
}

fn hostile_hello() -> impl Strategy<Value = pb::WorkerHello> {
    let lease = (hostile(), hostile()).prop_map(|(task_id, lease_token)| pb::LeaseRef {
        task_id,
        lease_token,
    });
    (
        prop_oneof![2 => Just("fuzz-worker".to_string()), 1 => hostile()],
        prop_oneof![3 => 1u32..4, 1 => any::<u32>()],
        prop_oneof![2 => Just("fuzz".to_string()), 1 => hostile()],
        hostile(),
        proptest::collection::vec(lease, 0..3),
    )
        .prop_map(
            |(worker_id, capacity, executor, version, held)| pb::WorkerHello {
                worker_id,
                capacity,
                executor,
                version,
                held,
            },
        )
}

/// One hostile call to one RPC, as the message to send.
#[derive(Debug, Clone)]
enum Call {
    Enqueue(Box<pb::EnqueueRequest>),
    Get(pb::GetTaskRequest),
    List(pb::ListTasksRequest),
    Update(pb::UpdateStatusRequest),
    Watch(pb::WatchTaskRequest),
    Attach(pb::WorkerHello, Vec<pb::WorkerMessage>),
    Version,
    SystemStatus,
    Audit(pb::ListAuditEventsRequest),
}

fn hostile_call() -> impl Strategy<Value = Call> {
    let maybe = || proptest::option::of(hostile());
    prop_oneof![
        6 => hostile_enqueue().prop_map(|request| Call::Enqueue(Box::new(request))),
        1 => hostile().prop_map(|task_id| Call::Get(pb::GetTaskRequest { task_id })),
        2 => (
            maybe(),
            maybe(),
            maybe(),
            maybe(),
            any::<i32>(),
            hostile(),
            prop_oneof![Just(0), Just(1), Just(2), any::<i32>()],
        )
            .prop_map(
                |(status, operation, requester_kind, target_repo, page_size, page_token, view)| {
                    Call::List(pb::ListTasksRequest {
                        status,
                        operation,
                        requester_kind,
                        target_repo,
                        page_size,
                        page_token,
                        view,
                    })
                }
            ),
        2 => hostile_report().prop_map(|report| {
            #[allow(deprecated)]
            Call::Update(pb::UpdateStatusRequest {
                task_id: report.task_id,
                status: report.legacy_status,
                result: report.result,
                error: report.error,
                trace_uri: report.trace_uri,
                lease_token: report.lease_token,
            })
        }),
        1 => hostile().prop_map(|task_id| Call::Watch(pb::WatchTaskRequest { task_id })),
        4 => (hostile_hello(), proptest::collection::vec(hostile_worker_message(), 0..6))
            .prop_map(|(hello, messages)| Call::Attach(hello, messages)),
        1 => Just(Call::Version),
        1 => Just(Call::SystemStatus),
        1 => (hostile(), hostile(), any::<i32>(), hostile()).prop_map(
            |(principal, task_id, page_size, page_token)| {
                Call::Audit(pb::ListAuditEventsRequest {
                    principal,
                    task_id,
                    page_size,
                    page_token,
                })
            }
        ),
    ]
}

async fn hostile_messages_at_every_rpc_are_answered_cleanly(url: &str) {
    let intake = TestIntake::start(url, "myorg/").await;
    let channel = intake.channel().await;
    let honest = Honest::start(&intake);
    run_cases(proptest::collection::vec(hostile_call(), 1..4), |calls| {
        let channel = channel.clone();
        async move {
            for call in calls {
                hostile_call_is_answered_cleanly(&channel, call).await?;
            }
            Ok(())
        }
    });
    honest.finish().await;
    intake.stop().await;
}

async fn hostile_call_is_answered_cleanly(
    channel: &Channel,
    call: Call,
) -> Result<(), TestCaseError> {
    match call {
        Call::Enqueue(request) => {
            let mut client = pb::task_service_client::TaskServiceClient::new(channel.clone());
            match client.enqueue(*request).await {
                // what was admitted reads back as it was answered, and is clean
                Ok(response) => {
                    let response = response.into_inner();
                    let Some(task) = response.task else {
                        return Err(TestCaseError::fail("an accepted enqueue without its task"));
                    };
                    prop_assert!(
                        jct::text::text_problem(&task.objective).is_none(),
                        "{task:?}"
                    );
                    let requester = task.requested_by.clone().unwrap_or_default();
                    prop_assert!(jct::text::line_problem(&requester.id).is_none(), "{task:?}");
                    if !response.task_id.is_empty() {
                        match client
                            .get_task(pb::GetTaskRequest {
                                task_id: response.task_id,
                            })
                            .await
                        {
                            Ok(stored) => prop_assert_eq!(stored.into_inner(), task),
                            Err(status) => clean_status("GetTask", &status)?,
                        }
                    }
                }
                Err(status) => clean_status("Enqueue", &status)?,
            }
        }
        Call::Get(request) => unary(channel, UNARY[1], request.encode_to_vec()).await?,
        Call::List(request) => unary(channel, UNARY[2], request.encode_to_vec()).await?,
        Call::Update(request) => unary(channel, UNARY[3], request.encode_to_vec()).await?,
        Call::Version => unary(channel, UNARY[4], Vec::new()).await?,
        Call::SystemStatus => unary(channel, UNARY[5], Vec::new()).await?,
        Call::Audit(request) => unary(channel, UNARY[6], request.encode_to_vec()).await?,
        Call::Watch(request) => {
            streaming(channel, WATCH, vec![request.encode_to_vec()]).await?;
        }
        Call::Attach(hello, messages) => {
            let mut stream = vec![
                pb::WorkerMessage {
                    kind: Some(pb::worker_message::Kind::Hello(hello)),
                }
                .encode_to_vec(),
            ];
            stream.extend(messages.iter().map(Message::encode_to_vec));
            let answers = streaming(channel, ATTACH, stream).await?;
            check_dispatch_answers(&answers)?;
        }
    }
    Ok(())
}
