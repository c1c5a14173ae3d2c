//! grpcurl finds everything through reflection, in both protocol versions:
//! `grpc.reflection.v1` and `v1alpha` (the only one grpcurl 1.8 speaks) each list
//! every service and resolve the contract's symbols to descriptors.

mod support;

use std::collections::HashSet;

const EXPECTED: [&str; 6] = [
    "jct.v1.TaskService",
    "jct.v1.DispatchService",
    "jct.v1.OperatorService",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Asks one reflection version for the service list and for the file defining
/// `symbol`; the two protocol versions share message shapes, not types.
macro_rules! ask {
    ($version:ident, $channel:expr, $symbol:expr) => {{
        use tonic_reflection::pb::$version::ServerReflectionRequest;
        use tonic_reflection::pb::$version::server_reflection_client::ServerReflectionClient;
        use tonic_reflection::pb::$version::server_reflection_request::MessageRequest;
        use tonic_reflection::pb::$version::server_reflection_response::MessageResponse;
        let requests = [
            MessageRequest::ListServices(String::new()),
            MessageRequest::FileContainingSymbol($symbol.to_string()),
        ]
        .map(|message| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(message),
        });
        let mut client = ServerReflectionClient::new($channel);
        let mut answers = client
            .server_reflection_info(tokio_stream::iter(requests))
            .await
            .expect("reflection stream")
            .into_inner();
        let mut services = HashSet::new();
        let mut descriptors = 0;
        while let Some(answer) = answers.message().await.expect("reflection answer") {
            match answer.message_response {
                Some(MessageResponse::ListServicesResponse(list)) => {
                    services.extend(list.service.into_iter().map(|s| s.name));
                }
                Some(MessageResponse::FileDescriptorResponse(files)) => {
                    descriptors += files.file_descriptor_proto.len()
                }
                other => panic!("unexpected reflection answer {other:?}"),
            }
        }
        (services, descriptors)
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_reflection_versions_list_every_service() {
    let database = jct_migrations::test_database::TestDatabase::sqlite();
    let intake = support::TestIntake::start(&database.url, "myorg/").await;
    let expected: HashSet<String> = EXPECTED.iter().map(|s| s.to_string()).collect();

    let (services, descriptors) = ask!(v1, intake.channel().await, "jct.v1.TaskService");
    assert_eq!(services, expected, "grpc.reflection.v1");
    assert!(descriptors > 0, "v1 resolves jct.v1.TaskService");

    let (services, descriptors) = ask!(v1alpha, intake.channel().await, "jct.v1.EnqueueRequest");
    assert_eq!(services, expected, "grpc.reflection.v1alpha");
    assert!(descriptors > 0, "v1alpha resolves jct.v1.EnqueueRequest");
    intake.stop().await;
}
