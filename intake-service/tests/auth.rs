//! Authentication and authorization over real gRPC: every role against every
//! method of the one method → roles table, missing, malformed, unknown and revoked
//! tokens, reloading the tokens file on SIGHUP, and the secure-by-default start.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use intake_service::auth::methods::{self, Access};
use intake_service::auth::{Role, Roles};
use intake_service::config::IntakeConfig;
use jct::v1 as pb;
use jct_migrations::test_database::TestDatabase;
use support::{TestIntake, as_caller, reason};
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

/// One principal per role, each with a token naming it.
const TOKENS: &str = "\
# role walk
tok-submitter,sam,submitter
tok-reader,rita,reader
tok-operator,olga,operator
tok-worker,walt,worker
";

fn token_of(role: Role) -> String {
    format!("tok-{role}")
}

fn write_tokens(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("tokens.csv");
    std::fs::write(&path, text).expect("write tokens");
    path
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Unauthenticated,
    Denied,
    /// Reached the handler (whatever the handler then answered).
    Admitted,
}

/// Calls `path` with an empty message (valid bytes for every request type) as a
/// server-streaming call, which fits unary and streaming methods alike.
async fn call(channel: tonic::transport::Channel, path: &str, token: Option<&str>) -> Verdict {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let request = match token {
        Some(token) => as_caller(pb::GetVersionRequest {}, token),
        None => tonic::Request::new(pb::GetVersionRequest {}),
    };
    let codec =
        jct::codec::ContractCodec::<pb::GetVersionRequest, pb::GetVersionRequest>::default();
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        grpc.server_streaming(
            request,
            PathAndQuery::try_from(path).expect("gRPC path"),
            codec,
        ),
    )
    .await
    .expect("the intake answers");
    match answer {
        Err(status) if status.code() == Code::Unauthenticated => {
            assert_eq!(reason(&status), "UNAUTHENTICATED", "{path}: {status:?}");
            Verdict::Unauthenticated
        }
        Err(status) if reason(&status) == "ROLE_NOT_ALLOWED" => {
            assert_eq!(status.code(), Code::PermissionDenied);
            Verdict::Denied
        }
        _ => Verdict::Admitted,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_reaches_exactly_the_methods_the_table_allows() {
    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let tokens = write_tokens(dir.path(), TOKENS);
    let intake = TestIntake::start_with_tokens(&database.url, "myorg/", &tokens).await;
    let channel = intake.channel().await;

    let mut checked = 0;
    for (path, access) in methods::METHODS {
        let anonymous = call(channel.clone(), path, None).await;
        let expected = if *access == Access::Open {
            Verdict::Admitted
        } else {
            Verdict::Unauthenticated
        };
        assert_eq!(anonymous, expected, "{path} without a token");
        for role in Role::ALL {
            let verdict = call(channel.clone(), path, Some(&token_of(role))).await;
            let expected = if methods::allows(*access, Roles::of(&[role])) {
                Verdict::Admitted
            } else {
                Verdict::Denied
            };
            assert_eq!(verdict, expected, "{role} calling {path}");
            checked += 1;
        }
    }
    assert_eq!(checked, methods::METHODS.len() * Role::ALL.len());

    // the contract's matrix, spelled out, so the table itself cannot drift
    let allowed = |path: &str, role: Role| {
        methods::allows(methods::access(path).expect("in table"), Roles::of(&[role]))
    };
    use Role::*;
    let expectations: &[(&str, &[Role])] = &[
        ("/jct.v1.TaskService/Enqueue", &[Submitter, Operator]),
        (
            "/jct.v1.TaskService/GetTask",
            &[Submitter, Reader, Operator],
        ),
        (
            "/jct.v1.TaskService/ListTasks",
            &[Submitter, Reader, Operator],
        ),
        (
            "/jct.v1.TaskService/WatchTask",
            &[Submitter, Reader, Operator],
        ),
        ("/jct.v1.TaskService/UpdateStatus", &[Submitter, Operator]),
        ("/jct.v1.DispatchService/Attach", &[Worker]),
        ("/jct.v1.OperatorService/GetVersion", &[Operator]),
        ("/jct.v1.OperatorService/GetSystemStatus", &[Operator]),
        ("/jct.v1.OperatorService/ListAuditEvents", &[Operator]),
    ];
    for (path, roles) in expectations {
        for role in Role::ALL {
            assert_eq!(
                allowed(path, role),
                roles.contains(&role),
                "{role} on {path}"
            );
        }
    }

    // a path the intake does not serve is refused, even to an operator
    assert_eq!(
        call(
            channel.clone(),
            "/jct.v1.TaskService/DropEverything",
            Some("tok-operator")
        )
        .await,
        Verdict::Denied
    );
    assert_eq!(
        call(channel.clone(), "/jct.v1.TaskService/DropEverything", None).await,
        Verdict::Unauthenticated
    );
    intake.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_malformed_and_unknown_tokens_are_unauthenticated() {
    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let tokens = write_tokens(dir.path(), TOKENS);
    let intake = TestIntake::start_with_tokens(&database.url, "myorg/", &tokens).await;
    let mut client = intake.client.clone();
    let list = || pb::ListTasksRequest::default();

    let mut attempts: Vec<(&str, tonic::Request<pb::ListTasksRequest>)> = Vec::new();
    attempts.push(("missing", tonic::Request::new(list())));
    for (label, header) in [
        ("basic scheme", "Basic dG9rLXJlYWRlcjo="),
        ("no token", "Bearer "),
        ("bare token", "tok-reader"),
        ("unknown", "Bearer tok-guessed"),
        (
            "hash instead of token",
            "Bearer sha256:0000000000000000000000000000000000000000000000000000000000000000",
        ),
    ] {
        let mut request = tonic::Request::new(list());
        request
            .metadata_mut()
            .insert("authorization", header.parse().expect("ascii"));
        attempts.push((label, request));
    }
    for (label, request) in attempts {
        let status = client.list_tasks(request).await.expect_err(label);
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (Code::Unauthenticated, "UNAUTHENTICATED"),
            "{label}"
        );
        assert!(
            !status.message().contains("tok-"),
            "{label}: {}",
            status.message()
        );
    }
    client
        .list_tasks(as_caller(list(), "tok-reader"))
        .await
        .expect("a known token passes");
    intake.stop().await;
}

async fn verdict_of(intake: &TestIntake, token: &str) -> Verdict {
    call(
        intake.channel().await,
        "/jct.v1.TaskService/ListTasks",
        Some(token),
    )
    .await
}

async fn wait_for(intake: &TestIntake, token: &str, wanted: Verdict) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let verdict = verdict_of(intake, token).await;
        if verdict == wanted {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{token}: still {verdict:?}, wanted {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn send_sighup() {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_callers_and_a_bad_file_keeps_the_old_ones() {
    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    let tokens = write_tokens(dir.path(), "tok-old,rita,reader\n");
    let intake = TestIntake::start_with_tokens(&database.url, "myorg/", &tokens).await;
    assert_eq!(verdict_of(&intake, "tok-old").await, Verdict::Admitted);
    assert_eq!(
        verdict_of(&intake, "tok-new").await,
        Verdict::Unauthenticated
    );

    // revoke one token, add another
    write_tokens(dir.path(), "tok-new,rita,reader\n");
    send_sighup();
    wait_for(&intake, "tok-new", Verdict::Admitted).await;
    assert_eq!(
        verdict_of(&intake, "tok-old").await,
        Verdict::Unauthenticated
    );

    // a broken file is refused: the callers in force stay
    write_tokens(dir.path(), "tok-new,rita,reader\ntok-x,mallory,superuser\n");
    send_sighup();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(verdict_of(&intake, "tok-new").await, Verdict::Admitted);
    assert_eq!(verdict_of(&intake, "tok-x").await, Verdict::Unauthenticated);

    // and a later good file is taken again; roles change with it
    write_tokens(dir.path(), "tok-new,rita,worker\n");
    send_sighup();
    wait_for(&intake, "tok-new", Verdict::Denied).await;
    intake.stop().await;
}

async fn serve_error(config: IntakeConfig, bind: &str) -> String {
    let listener = tokio::net::TcpListener::bind(bind).await.expect("bind");
    let started = tokio::time::timeout(
        Duration::from_secs(10),
        intake_service::server::serve(config, listener, std::future::pending()),
    )
    .await
    .expect("the intake refuses at once");
    match started {
        Err(error) => error.to_string(),
        Ok(()) => panic!("the intake must not start"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_intake_serves_loopback_only_unless_insecure() {
    let database = TestDatabase::sqlite();
    let config = IntakeConfig::for_database(&database.url);
    let message = serve_error(config.clone(), "0.0.0.0:0").await;
    assert!(
        message.contains("JCT_AUTH_TOKENS_FILE") && message.contains("JCT_INSECURE=true"),
        "{message}"
    );

    let mut insecure = config.clone();
    insecure.insecure = true;
    insecure.shutdown_grace_seconds = 1;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(intake_service::server::serve(insecure, listener, async {
        let _ = stopped.await;
    }));
    let channel = support::channel(([127, 0, 0, 1], port).into()).await;
    let mut client = pb::task_service_client::TaskServiceClient::new(channel);
    client
        .list_tasks(pb::ListTasksRequest::default())
        .await
        .expect("JCT_INSECURE=true admits everyone as anonymous");
    let _ = stop.send(());
    server.await.expect("join").expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_tokens_file_stops_the_start_naming_the_line_not_the_token() {
    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().expect("dir");
    for (text, line) in [
        ("tok-a,alice,submitter\n\ntok-secret,bob,admin\n", "line 3"),
        ("tok-a,alice,submitter\ntok-a,bob,reader\n", "line 2"),
        ("# only a comment\ntok-secret,bob\n", "line 2"),
    ] {
        let mut config = IntakeConfig::for_database(&database.url);
        config.auth_tokens_file = Some(write_tokens(dir.path(), text));
        let message = serve_error(config, "127.0.0.1:0").await;
        assert!(message.contains(line), "{message}");
        assert!(
            !message.contains("tok-secret") && !message.contains("tok-a"),
            "{message}"
        );
    }
    let mut config = IntakeConfig::for_database(&database.url);
    config.auth_tokens_file = Some(dir.path().join("absent.csv"));
    let message = serve_error(config, "127.0.0.1:0").await;
    assert!(message.contains("absent.csv"), "{message}");
}
