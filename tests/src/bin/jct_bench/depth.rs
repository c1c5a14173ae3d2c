//! The queue-depth query (counts by status, the oldest queued task: what
//! GetSystemStatus and the `jct_tasks` / `jct_oldest_queued_age_seconds` gauges
//! read) over a table bulk-loaded in SQL after the intake migrated it.
//!
//! Rows are copies of one enqueued task: one in a thousand queued, one in a
//! hundred failed, the rest completed. SQLite: batches of 100,000 from a
//! recursive CTE, its audit trigger firing as for any insert. Postgres: one
//! `generate_series` insert with triggers off (`session_replication_role =
//! replica`: a NOTIFY per row would only fill the notification queue).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

use super::rounds::{load_average, scrape};
use super::{
    OperatorServiceClient, TaskServiceClient, channels, database_url, enqueue_request, free_port,
    pb, start_intake_with,
};

const TEMPLATE_OBJECTIVE: &str = "Benchmark task number 0";
const SQLITE_BATCH: u64 = 100_000;
const COUNT_SQL: &str = "SELECT status, COUNT(id) FROM tasks GROUP BY status";

pub async fn bench_depth(
    bin_dir: &Path,
    backend: &str,
    rows: u64,
    samples: usize,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let url = database_url(backend, dir.path()).await?;
    let metrics_port = free_port()?;
    let env = [
        ("DATABASE_URL", url.clone()),
        ("JCT_METRICS_ADDR", format!("127.0.0.1:{metrics_port}")),
    ];
    let (intake, address) = start_intake_with(bin_dir, backend, &env, None).await?;
    let channel = channels(&address, 1).await?.remove(0);
    let mut tasks = TaskServiceClient::new(channel.clone());
    tasks.enqueue(enqueue_request(0)).await?;
    let mut operator = OperatorServiceClient::new(channel);
    println!("backend={backend} rows={rows} samples={samples}");
    measure("1 task", &mut operator, metrics_port, samples).await?;

    let db = Database::connect(&url).await?;
    let started = Instant::now();
    bulk_load(&db, backend, rows).await?;
    println!(
        "bulk-loaded {rows} rows in {:.1}s load_average={}",
        started.elapsed().as_secs_f64(),
        load_average()
    );
    measure(
        &format!("{rows} tasks, just loaded"),
        &mut operator,
        metrics_port,
        samples,
    )
    .await?;
    print_plan(&db, backend).await?;
    if backend == "postgres" {
        // what autovacuum would do after such a load: the visibility map lets
        // the count read the index alone
        let started = Instant::now();
        db.execute_unprepared("VACUUM ANALYZE tasks").await?;
        println!(
            "VACUUM ANALYZE tasks: {:.1}s",
            started.elapsed().as_secs_f64()
        );
        measure(
            &format!("{rows} tasks, vacuumed"),
            &mut operator,
            metrics_port,
            samples,
        )
        .await?;
        print_plan(&db, backend).await?;
    }
    let (_, peak) = intake.rss_kb();
    println!(
        "intake peak(VmHWM)={:.1}MB load_average={}",
        peak as f64 / 1024.0,
        load_average()
    );
    db.close().await?;
    intake.stop().await;
    Ok(())
}

/// `samples` GetSystemStatus calls, then `samples` scrapes, one after another.
async fn measure(
    label: &str,
    operator: &mut OperatorServiceClient<tonic::transport::Channel>,
    metrics_port: u16,
    samples: usize,
) -> anyhow::Result<()> {
    let mut status = Histogram::<u64>::new(3)?;
    let mut counted = 0;
    for _ in 0..samples {
        let asked = Instant::now();
        let answer = operator
            .get_system_status(pb::GetSystemStatusRequest {})
            .await?
            .into_inner();
        status.record(asked.elapsed().as_micros() as u64)?;
        counted = answer.task_counts.values().sum::<i64>();
    }
    let mut scrapes = Histogram::<u64>::new(3)?;
    let mut up = false;
    for _ in 0..samples {
        let asked = Instant::now();
        let body = scrape(metrics_port).await?;
        scrapes.record(asked.elapsed().as_micros() as u64)?;
        up = body.contains("jct_database_up 1");
    }
    println!(
        "{label}: GetSystemStatus p50={:.1}ms p99={:.1}ms max={:.1}ms (counts sum {counted}); \
         /metrics scrape p50={:.1}ms p99={:.1}ms max={:.1}ms (jct_database_up 1: {up}); load_average={}",
        ms(status.value_at_quantile(0.5)),
        ms(status.value_at_quantile(0.99)),
        ms(status.max()),
        ms(scrapes.value_at_quantile(0.5)),
        ms(scrapes.value_at_quantile(0.99)),
        ms(scrapes.max()),
        load_average()
    );
    Ok(())
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

async fn bulk_load(db: &DatabaseConnection, backend: &str, rows: u64) -> anyhow::Result<()> {
    let columns = column_names(db, backend).await?;
    let id = match backend {
        "postgres" => "gen_random_uuid()".to_string(),
        _ => sqlite_id_expression(db).await?,
    };
    let exprs: Vec<String> = columns
        .iter()
        .map(|column| match column.as_str() {
            "id" => id.clone(),
            "idempotency_key" => "NULL".into(),
            "objective" => "'Bulk-loaded task ' || n.i".into(),
            "status" => "CASE WHEN n.i % 1000 = 0 THEN 'queued' \
                         WHEN n.i % 100 = 1 THEN 'failed' ELSE 'completed' END"
                .into(),
            // a microsecond apart, older than the template
            "created_at" | "queued_at" | "updated_at" | "available_at" => {
                format!("t.{column} - n.i")
            }
            other => format!("t.{other}"),
        })
        .collect();
    let insert = format!(
        "INSERT INTO tasks ({}) SELECT {} FROM {{rows}}, \
         (SELECT * FROM tasks WHERE objective = '{TEMPLATE_OBJECTIVE}') AS t",
        columns.join(", "),
        exprs.join(", ")
    );
    match backend {
        "postgres" => {
            let sql = format!(
                "SET session_replication_role = replica; {}; SET session_replication_role = DEFAULT;",
                insert.replace("{rows}", &format!("generate_series(1, {rows}) AS n(i)"))
            );
            db.execute_unprepared(&sql).await?;
        }
        _ => {
            let mut start = 0;
            while start < rows {
                let end = (start + SQLITE_BATCH).min(rows);
                let sql = format!(
                    "WITH RECURSIVE n(i) AS (SELECT {} UNION ALL SELECT i + 1 FROM n WHERE i < {end}) {}",
                    start + 1,
                    insert.replace("{rows}", "n")
                );
                let mut attempts = 0;
                // the intake's own writer may hold the lock a moment
                while let Err(error) = db.execute_unprepared(&sql).await {
                    attempts += 1;
                    if attempts > 5 {
                        return Err(error).context("bulk insert");
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                start = end;
            }
        }
    }
    Ok(())
}

async fn column_names(db: &DatabaseConnection, backend: &str) -> anyhow::Result<Vec<String>> {
    let sql = match backend {
        "postgres" => {
            "SELECT column_name AS name FROM information_schema.columns \
             WHERE table_name = 'tasks' AND table_schema = current_schema() ORDER BY ordinal_position"
        }
        _ => "SELECT name FROM pragma_table_info('tasks')",
    };
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?;
    let mut names = Vec::new();
    for row in rows {
        names.push(row.try_get::<String>("", "name")?);
    }
    anyhow::ensure!(names.iter().any(|n| n == "id"), "no tasks table: {names:?}");
    Ok(names)
}

/// A fresh id in the form the intake stores ids on SQLite (16-byte blob or text).
async fn sqlite_id_expression(db: &DatabaseConnection) -> anyhow::Result<String> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT typeof(id) AS kind FROM tasks LIMIT 1",
        ))
        .await?
        .context("the template task")?;
    let kind: String = row.try_get("", "kind")?;
    Ok(match kind.as_str() {
        "blob" => "randomblob(16)".into(),
        _ => "lower(hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || \
              substr(hex(randomblob(2)), 2) || '-a' || substr(hex(randomblob(2)), 2) || '-' || \
              hex(randomblob(6)))"
            .into(),
    })
}

/// The count's plan and, on Postgres, its measured execution.
async fn print_plan(db: &DatabaseConnection, backend: &str) -> anyhow::Result<()> {
    let (sql, column) = match backend {
        "postgres" => (
            format!("EXPLAIN (ANALYZE, BUFFERS) {COUNT_SQL}"),
            "QUERY PLAN",
        ),
        _ => (format!("EXPLAIN QUERY PLAN {COUNT_SQL}"), "detail"),
    };
    let started = Instant::now();
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?;
    println!(
        "plan of `{COUNT_SQL}` ({:.1}ms):",
        started.elapsed().as_secs_f64() * 1000.0
    );
    for row in rows {
        println!("  {}", row.try_get::<String>("", column)?);
    }
    Ok(())
}
