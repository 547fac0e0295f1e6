//! The PSI peer and control services against clients that misbehave: every
//! refusal is a clear status, and nothing is served to the wrong caller.

use std::time::Duration;

use stayput_localnet::{DatasetSpec, LocalNet, OrgSpec};
use stayput_node::peers::connect;
use stayput_proto::v1::node_control_client::NodeControlClient;
use stayput_proto::v1::psi_peer_client::PsiPeerClient;
use stayput_proto::v1::{
    ListDatasetsRequest, PsiMode, PsiOpen, PsiProtocol, PsiRequesterMessage, psi_requester_message::Body,
};
use tonic::Code;

async fn consortium(dir: &std::path::Path) -> LocalNet {
    let csv = dir.join("ids.csv");
    std::fs::write(&csv, "id\na\nb\nc\n").unwrap();
    let org = |name: &str| OrgSpec {
        name: name.into(),
        datasets: vec![DatasetSpec {
            name: "ids".into(),
            path: csv.clone(),
            key_columns: vec!["id".into()],
            normalise: vec!["trim".into()],
            labels: None,
            pir: None,
        }],
    };
    LocalNet::start(dir, &[org("bank"), org("bureau")], None).await.unwrap()
}

fn open(size: u64) -> PsiRequesterMessage {
    PsiRequesterMessage {
        body: Some(Body::Open(PsiOpen {
            protocol_version: stayput_node::psi::PROTOCOL_VERSION,
            task_id: "t-1".into(),
            dataset: "ids".into(),
            mode: PsiMode::Intersection as i32,
            requester_size: size,
            key_columns: 1,
            normalisation: vec!["trim".into()],
            batch_size: 16,
            protocol: PsiProtocol::Ecdh as i32,
            parts: 0,
            partition_key: Default::default(),
            resume: false,
            parts_done: 0,
            shard: 0,
            shards: 0,
        })),
    }
}

fn open_kkrt(size: u64, mode: PsiMode) -> PsiRequesterMessage {
    let mut message = open(size);
    if let Some(Body::Open(o)) = message.body.as_mut() {
        o.protocol = PsiProtocol::Kkrt as i32;
        o.mode = mode as i32;
    }
    message
}

fn kkrt(bytes: Vec<u8>) -> PsiRequesterMessage {
    PsiRequesterMessage { body: Some(Body::Kkrt(bytes.into())) }
}

/// Sends `messages` as bank to bureau's peer service and returns the first
/// error status the exchange produces.
async fn exchange_error(net: &LocalNet, messages: Vec<PsiRequesterMessage>) -> tonic::Status {
    let addr = net.nodes["bureau"].addr;
    let channel = connect(net.state("bank"), "bureau", &format!("https://{addr}")).await.unwrap();
    let mut client = PsiPeerClient::new(channel).max_encoding_message_size(16 << 20);
    let outbound = tokio_stream::iter(messages);
    let mut inbound = match client.exchange(outbound).await {
        Ok(response) => response.into_inner(),
        Err(status) => return status,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, inbound.message()).await.expect("no hang") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the exchange ended without an error"),
            Err(status) => return status,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_requesters_get_clear_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let net = consortium(dir.path()).await;

    let status =
        exchange_error(&net, vec![PsiRequesterMessage { body: Some(Body::RequestPoints(vec![1u8; 32].into())) }]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("where open was expected"), "{status:?}");

    let mut bad_version = open(1);
    if let Some(Body::Open(o)) = bad_version.body.as_mut() {
        o.protocol_version = 1;
    }
    // A node of protocol version 1 (ECDH over Ristretto255) is told to upgrade.
    let status = exchange_error(&net, vec![bad_version]).await;
    assert!(status.message().contains("protocol version 1 is not supported; this node speaks version 2"), "{status:?}");

    // The point 2^255 - 1 is not canonical, and u = 1 has order 4 (a
    // small-subgroup probe): each is named and refused, not answered.
    let mut not_canonical = [0xffu8; 32];
    not_canonical[31] = 0x7f;
    let mut order_four = [0u8; 32];
    order_four[0] = 1;
    for (point, says) in
        [(not_canonical, "not a canonical X25519 u-coordinate"), (order_four, "point 0 of the batch has small order")]
    {
        let request = PsiRequesterMessage { body: Some(Body::RequestPoints(point.to_vec().into())) };
        let status = exchange_error(&net, vec![open(1), request]).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(says), "{status:?}");
    }

    // A message beyond the size limit is refused by the transport.
    let huge = vec![0u8; stayput_node::wire::MAX_MESSAGE_BYTES + 64];
    let status =
        exchange_error(&net, vec![open(1), PsiRequesterMessage { body: Some(Body::RequestPoints(huge.into())) }]).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("message length too large"), "{status:?}");

    // More points than announced: two valid points where one was announced.
    let point = curve25519_dalek::constants::X25519_BASEPOINT.to_bytes();
    let status = exchange_error(
        &net,
        vec![open(1), PsiRequesterMessage { body: Some(Body::RequestPoints([point, point].concat().into())) }],
    )
    .await;
    assert!(status.message().contains("sent 2 items in the requests phase but announced 1"), "{status:?}");

    // KKRT: an unknown protocol, cardinality, another message version, a
    // setup that does not fit the announced size, an ECDH message in a
    // KKRT session, corrections that skip bins.
    let mut unknown = open(1);
    if let Some(Body::Open(o)) = unknown.body.as_mut() {
        o.protocol = 7;
    }
    let status = exchange_error(&net, vec![unknown]).await;
    assert!(status.message().contains("PSI protocol 7 is not known"), "{status:?}");
    let status = exchange_error(&net, vec![open_kkrt(1, PsiMode::Cardinality)]).await;
    assert!(status.message().contains("does not offer the cardinality mode"), "{status:?}");
    use stayput_psi::kkrt::messages::{Corrections, Setup};
    let base = curve25519_dalek::constants::RISTRETTO_BASEPOINT_COMPRESSED.to_bytes();
    let setup = Setup { seed: [1; 16], bins: 128, point: base };
    let mut v2 = setup.to_bytes();
    v2[0] = 2;
    let status = exchange_error(&net, vec![open_kkrt(1, PsiMode::Intersection), kkrt(v2)]).await;
    assert!(status.message().contains("format version 2") && status.message().contains("upgrade"), "{status:?}");
    let wrong_bins = Setup { bins: 256, ..setup.clone() }.to_bytes();
    let status = exchange_error(&net, vec![open_kkrt(1, PsiMode::Intersection), kkrt(wrong_bins)]).await;
    assert!(status.message().contains("256 bins for 1 announced keys"), "{status:?}");
    let ecdh_message = PsiRequesterMessage { body: Some(Body::RequestPoints(base.to_vec().into())) };
    let status = exchange_error(&net, vec![open_kkrt(1, PsiMode::Intersection), ecdh_message]).await;
    assert!(status.message().contains("request points where KKRT setup was expected"), "{status:?}");
    let mut skipping = vec![1u8, 3];
    skipping.extend_from_slice(&128u32.to_le_bytes());
    skipping.resize(6 + 128 * 64, 0);
    assert!(Corrections::decode(&skipping).is_ok());
    let status =
        exchange_error(&net, vec![open_kkrt(1, PsiMode::Intersection), kkrt(setup.to_bytes()), kkrt(skipping)]).await;
    assert!(status.message().contains("rows from bin 128 where bin 0 comes next"), "{status:?}");

    // Parts: ECDH never runs in parts; KKRT parts need a 32-byte key, no
    // more parts than keys, and part sizes that add up to the set.
    let with_parts = |mut message: PsiRequesterMessage, parts: u32, key: Vec<u8>| {
        if let Some(Body::Open(o)) = message.body.as_mut() {
            o.parts = parts;
            o.partition_key = key.into();
        }
        message
    };
    // A whole OT set above the part bound is refused at the open: RR22 (and
    // KKRT) sizes its work by the announced count.
    for protocol in [PsiProtocol::Kkrt, PsiProtocol::Rr22] {
        let mut huge = open_kkrt(1 << 23, PsiMode::Intersection);
        if let Some(Body::Open(o)) = huge.body.as_mut() {
            o.protocol = protocol as i32;
        }
        let status = exchange_error(&net, vec![huge]).await;
        assert!(status.message().contains("exceed 4194304 keys a part; use more parts"), "{status:?}");
    }
    let status = exchange_error(&net, vec![with_parts(open(2), 2, vec![9; 32])]).await;
    assert!(status.message().contains("only sessions of an OT protocol (kkrt, rr22) run in parts"), "{status:?}");
    let status = exchange_error(&net, vec![with_parts(open_kkrt(2, PsiMode::Intersection), 2, vec![9; 31])]).await;
    assert!(status.message().contains("a partition key of 31 bytes"), "{status:?}");
    let status = exchange_error(&net, vec![with_parts(open_kkrt(1, PsiMode::Intersection), 2, vec![9; 32])]).await;
    assert!(status.message().contains("2 parts for 1 keys"), "{status:?}");
    let sizes = stayput_psi::kkrt::messages::PartSizes { sizes: vec![1, 2] }.to_bytes();
    let status =
        exchange_error(&net, vec![with_parts(open_kkrt(2, PsiMode::Intersection), 2, vec![9; 32]), kkrt(sizes)]).await;
    assert!(status.message().contains("part sizes adding up to Some(3) for 2 parts of 2 keys"), "{status:?}");
    // Sizes that add up but put everything in one part beyond the bound.
    let n = stayput_psi::kkrt::MAX_PART_KEYS + 1;
    let lopsided = stayput_psi::kkrt::messages::PartSizes { sizes: vec![n, 0] }.to_bytes();
    let status =
        exchange_error(&net, vec![with_parts(open_kkrt(n, PsiMode::Intersection), 2, vec![9; 32]), kkrt(lopsided)])
            .await;
    assert!(status.message().contains("claims a part of 4194305 keys"), "{status:?}");
    // A keyed split is even: a part above twice the even share is refused
    // (a part run again on resumption is metered at that bound).
    let uneven = stayput_psi::kkrt::messages::PartSizes { sizes: vec![7000, 1000, 1000, 1000] }.to_bytes();
    let status =
        exchange_error(&net, vec![with_parts(open_kkrt(10_000, PsiMode::Intersection), 4, vec![9; 32]), kkrt(uneven)])
            .await;
    assert!(status.message().contains("10000 keys into 4 parts holds at most 6024 a part"), "{status:?}");

    // Resuming: KKRT in parts only, and only under a ledger's use record.
    let resuming = |mut message: PsiRequesterMessage| {
        if let Some(Body::Open(o)) = message.body.as_mut() {
            o.resume = true;
            o.parts_done = 1;
        }
        message
    };
    let status = exchange_error(&net, vec![resuming(open(2))]).await;
    assert!(status.message().contains("only sessions in parts (kkrt, rr22) resume"), "{status:?}");
    let status =
        exchange_error(&net, vec![resuming(with_parts(open_kkrt(2, PsiMode::Intersection), 2, vec![9; 32]))]).await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("resuming a session needs the ledger's use record"), "{status:?}");

    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_service_serves_only_its_own_organisation() {
    let dir = tempfile::tempdir().unwrap();
    let net = consortium(dir.path()).await;
    let bank_addr = net.nodes["bank"].addr;
    // The bureau dials the bank's node with its own certificate.
    let channel = connect(net.state("bureau"), "bank", &format!("https://{bank_addr}")).await.unwrap();
    let status = NodeControlClient::new(channel).list_datasets(ListDatasetsRequest {}).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    assert!(status.message().contains("caller 'bureau'"), "{status:?}");
    // The bank itself may.
    let own = stayput_node::control::list_datasets(net.state("bank")).await.unwrap();
    assert_eq!(own[0].0, "ids");
    net.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let dir = tempfile::tempdir().unwrap();
    let net = consortium(dir.path()).await;
    let addr = net.nodes["bureau"].addr;
    let channel = connect(net.state("bank"), "bureau", &format!("https://{addr}")).await.unwrap();

    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest { service: "stayput.v1.PsiPeer".into() })
        .await
        .unwrap();
    assert_eq!(health.into_inner().status(), ServingStatus::Serving);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["stayput.v1.PsiPeer", "stayput.v1.NodeControl", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    net.shutdown().await.unwrap();
}
