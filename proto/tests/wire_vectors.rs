//! Known-answer vectors for the gRPC messages (stayput.v1): the protobuf
//! bytes of fixed messages, so a renumbered or retyped field — which would
//! silently break nodes of different versions — fails here. Regenerate after
//! a deliberate, version-bumping change with
//! `STAYPUT_WRITE_VECTORS=1 cargo test -p stayput-proto`.

use std::collections::BTreeMap;

use prost::Message;
use stayput_proto::v1::{
    CensusRequest, CensusResponse, ComputeOnlyRequest, ComputeOnlyResponse, ContributeRequest, ContributeResponse,
    EvaluateRequest, EvaluateResponse, FetchHintRequest, FetchSetRequest, FheDeposit, FheDownload, FheOpen, FhePhase,
    FheUpload, HintChunk, HintHeader, LearningAccept, LearningFrame, LearningOpen, LearningRequesterMessage,
    LearningResponderMessage, LearningSummary, LookupRequest, LookupResponse, OutputFormat, PsiAccept, PsiMode,
    PsiOpen, PsiProtocol, PsiRequesterMessage, PsiResponderMessage, PsiSummary, RunPsiRequest, RunTaskRequest,
    SetChunk, SetHeader, ShareRequest, SubmitTaskRequest, SubmitTaskResponse, TaskEvent, TaskProgress, TaskResult,
    TaskState, TaskUpdate, WatchTaskRequest, fhe_download, fhe_upload, hint_chunk, learning_requester_message,
    learning_responder_message, psi_requester_message, psi_responder_message, set_chunk, task_event,
};

/// The vectors beside this crate, found at run time: a test binary reused
/// from a shared target directory must not read another checkout's file.
fn vectors_path() -> std::path::PathBuf {
    std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"))
        .join("test-vectors/stayput-v1.json")
}

fn open() -> PsiOpen {
    PsiOpen {
        protocol_version: 1,
        task_id: "t-0001".into(),
        dataset: "blacklist".into(),
        mode: PsiMode::IntersectionBoth as i32,
        requester_size: 1_048_576,
        key_columns: 2,
        normalisation: vec!["trim".into(), "uppercase".into()],
        batch_size: 4096,
        protocol: PsiProtocol::Ecdh as i32,
        parts: 0,
        partition_key: Default::default(),
        resume: false,
        parts_done: 0,
        shard: 0,
        shards: 0,
    }
}

fn encoded() -> BTreeMap<&'static str, Vec<u8>> {
    let mut v = BTreeMap::new();
    v.insert("PsiOpen", open().encode_to_vec());
    v.insert(
        "PsiRequesterMessage.open",
        PsiRequesterMessage { body: Some(psi_requester_message::Body::Open(open())) }.encode_to_vec(),
    );
    v.insert(
        "PsiOpen.kkrt",
        PsiOpen {
            protocol: PsiProtocol::Kkrt as i32,
            mode: PsiMode::Intersection as i32,
            parts: 4,
            partition_key: vec![0x11; 32].into(),
            ..open()
        }
        .encode_to_vec(),
    );
    v.insert(
        "PsiOpen.kkrt_resumed",
        PsiOpen {
            protocol: PsiProtocol::Kkrt as i32,
            mode: PsiMode::Intersection as i32,
            parts: 4,
            partition_key: vec![0x11; 32].into(),
            resume: true,
            parts_done: 2,
            ..open()
        }
        .encode_to_vec(),
    );
    v.insert(
        "PsiOpen.kkrt_shard",
        PsiOpen {
            protocol: PsiProtocol::Kkrt as i32,
            mode: PsiMode::Intersection as i32,
            shard: 2,
            shards: 4,
            ..open()
        }
        .encode_to_vec(),
    );
    v.insert(
        "PsiResponderMessage.accept_resumed",
        PsiResponderMessage {
            body: Some(psi_responder_message::Body::Accept(PsiAccept { responder_size: 300, resume_from: 1 })),
        }
        .encode_to_vec(),
    );
    v.insert(
        "PsiRequesterMessage.kkrt",
        PsiRequesterMessage { body: Some(psi_requester_message::Body::Kkrt(vec![1, 1, 0xbb].into())) }.encode_to_vec(),
    );
    v.insert(
        "PsiResponderMessage.kkrt",
        PsiResponderMessage { body: Some(psi_responder_message::Body::Kkrt(vec![1, 2, 0xcc].into())) }.encode_to_vec(),
    );
    v.insert(
        "PsiRequesterMessage.request_points",
        PsiRequesterMessage { body: Some(psi_requester_message::Body::RequestPoints(vec![0xaa; 32].into())) }
            .encode_to_vec(),
    );
    v.insert(
        "PsiRequesterMessage.echo_tags",
        PsiRequesterMessage { body: Some(psi_requester_message::Body::EchoTags(vec![0xbb; 12].into())) }
            .encode_to_vec(),
    );
    v.insert(
        "PsiResponderMessage.accept",
        PsiResponderMessage {
            body: Some(psi_responder_message::Body::Accept(PsiAccept { responder_size: 300, resume_from: 0 })),
        }
        .encode_to_vec(),
    );
    v.insert(
        "PsiResponderMessage.responder_points",
        PsiResponderMessage { body: Some(psi_responder_message::Body::ResponderPoints(vec![0xcc; 32].into())) }
            .encode_to_vec(),
    );
    v.insert(
        "PsiResponderMessage.reply_tags",
        PsiResponderMessage { body: Some(psi_responder_message::Body::ReplyTags(vec![0xdd; 12].into())) }
            .encode_to_vec(),
    );
    v.insert(
        "PsiResponderMessage.summary",
        PsiResponderMessage { body: Some(psi_responder_message::Body::Summary(PsiSummary { responder_matches: 7 })) }
            .encode_to_vec(),
    );
    v.insert(
        "RunPsiRequest",
        RunPsiRequest {
            task_id: "t-0001".into(),
            dataset: "applicants".into(),
            peer: "bureau".into(),
            peer_dataset: "blacklist".into(),
            mode: PsiMode::Cardinality as i32,
            output_format: OutputFormat::Parquet as i32,
            protocol: PsiProtocol::Ecdh as i32,
            parts: 0,
        }
        .encode_to_vec(),
    );
    v.insert(
        "RunTaskRequest",
        RunTaskRequest { task_id: "t-0001".into(), params: vec![1, 2, 3].into(), shard: 0 }.encode_to_vec(),
    );
    v.insert(
        "RunTaskRequest.shard",
        RunTaskRequest { task_id: "t-0001".into(), params: vec![1, 2, 3].into(), shard: 3 }.encode_to_vec(),
    );
    v.insert("SubmitTaskRequest", SubmitTaskRequest { signed_request: vec![0xee; 8].into() }.encode_to_vec());
    v.insert(
        "SubmitTaskResponse",
        SubmitTaskResponse { task_id: "t-0001".into(), grants: vec!["g-1".into()], existing: true }.encode_to_vec(),
    );
    v.insert(
        "ContributeRequest",
        ContributeRequest {
            task_id: "t-0001".into(),
            dataset: "inpatients-a".into(),
            params: vec![2, 1].into(),
            fhe_public_key: Default::default(),
            version: 2,
            pass_tokens: Vec::new(),
        }
        .encode_to_vec(),
    );
    v.insert(
        "ContributeRequestWithFheKey",
        ContributeRequest {
            task_id: "t-0001".into(),
            dataset: "inpatients-a".into(),
            params: vec![2, 1].into(),
            fhe_public_key: vec![0x66; 4].into(),
            version: 2,
            pass_tokens: vec![0x0102_0304, 0, 0xffff_fffe],
        }
        .encode_to_vec(),
    );
    v.insert(
        "CensusRequest",
        CensusRequest {
            version: 2,
            task_id: "t-0001".into(),
            dataset: "inpatients-a".into(),
            params: vec![2, 1].into(),
            fhe_public_key: vec![0x66; 4].into(),
        }
        .encode_to_vec(),
    );
    v.insert("CensusResponse", CensusResponse { rows: 3000 }.encode_to_vec());
    v.insert(
        "FheUploadOpen",
        FheUpload {
            part: Some(fhe_upload::Part::Open(FheOpen {
                task_id: "t-0001".into(),
                server_key_len: 1 << 20,
                phase: FhePhase::Census as i32,
            })),
        }
        .encode_to_vec(),
    );
    v.insert(
        "FheUploadKeyChunk",
        FheUpload { part: Some(fhe_upload::Part::ServerKeyChunk(vec![0x77; 4].into())) }.encode_to_vec(),
    );
    v.insert(
        "FetchSetRequest",
        FetchSetRequest { task_id: "t-0001".into(), dataset: "blacklist-a".into(), have_version: 1 }.encode_to_vec(),
    );
    v.insert(
        "SetChunkHeader",
        SetChunk {
            part: Some(set_chunk::Part::Header(SetHeader {
                delta: true,
                from_version: 1,
                to_version: 2,
                length: 300,
                key_declaration: "1 key column(s) normalised with [trim]".into(),
            })),
        }
        .encode_to_vec(),
    );
    v.insert("SetChunkData", SetChunk { part: Some(set_chunk::Part::Data(vec![0xbb; 3].into())) }.encode_to_vec());
    v.insert(
        "EvaluateRequest",
        EvaluateRequest { task_id: "t-0001".into(), dataset: "blacklist-a".into(), blinded: vec![0xcc; 32].into() }
            .encode_to_vec(),
    );
    v.insert(
        "EvaluateResponse",
        EvaluateResponse { evaluations: vec![0xdd; 32].into(), proof: vec![0xee; 64].into() }.encode_to_vec(),
    );
    v.insert(
        "FheDeposit",
        FheDeposit {
            task_id: "t-0001".into(),
            extremes: Default::default(),
            phase: FhePhase::Census as i32,
            census: vec![0x99; 2].into(),
        }
        .encode_to_vec(),
    );
    v.insert(
        "FheDepositExtremes",
        FheDeposit {
            task_id: "t-0001".into(),
            extremes: vec![0x88; 2].into(),
            phase: FhePhase::Extremes as i32,
            census: Default::default(),
        }
        .encode_to_vec(),
    );
    v.insert(
        "FheDownloadToken",
        FheDownload { value: Some(fhe_download::Value::Token(vec![0xaa; 2].into())) }.encode_to_vec(),
    );
    v.insert(
        "ContributeResponse",
        ContributeResponse {
            contribution: vec![0x11; 4].into(),
            rows: 3000,
            value_sum: vec![0x22; 32].into(),
            blinding_sum: vec![0x33; 32].into(),
        }
        .encode_to_vec(),
    );
    v.insert(
        "ShareRequest",
        ShareRequest {
            task_id: "t-0001".into(),
            value_share: vec![0x44; 32].into(),
            blinding_share: vec![0x55; 32].into(),
            pass_set: vec![1, 0, 1].into(),
        }
        .encode_to_vec(),
    );
    v.insert(
        "ComputeOnlyRequest",
        ComputeOnlyRequest { task_id: "t-0001".into(), params: vec![0x04, 0x03].into() }.encode_to_vec(),
    );
    v.insert(
        "ComputeOnlyResponse",
        ComputeOnlyResponse {
            table: vec![0xff; 4].into(),
            rows_scanned: 50_000,
            groups_released: 120,
            groups_suppressed: 7,
            epsilon_spent: 500,
            epsilon_left: 2_500,
        }
        .encode_to_vec(),
    );
    v.insert(
        "FetchHintRequest",
        FetchHintRequest { task_id: "t-0001".into(), dataset: "stations".into() }.encode_to_vec(),
    );
    v.insert(
        "HintChunk.header",
        HintChunk {
            part: Some(hint_chunk::Part::Header(HintHeader {
                version: 3,
                length: 4_194_304,
                schema: b"{\"key_columns\":1}".to_vec().into(),
            })),
        }
        .encode_to_vec(),
    );
    v.insert("HintChunk.data", HintChunk { part: Some(hint_chunk::Part::Data(vec![0x12; 8].into())) }.encode_to_vec());
    v.insert(
        "LookupRequest",
        LookupRequest {
            task_id: "t-0001".into(),
            dataset: "stations".into(),
            version: 3,
            queries: vec![vec![0x01; 8].into(), vec![0x02; 8].into()],
            protocol: 2,
            blinded: vec![vec![0x04; 32].into(), vec![0x05; 32].into()],
        }
        .encode_to_vec(),
    );
    v.insert(
        "LookupResponse",
        LookupResponse {
            answers: vec![vec![0x03; 12].into()],
            evaluations: vec![vec![0x06; 32].into()],
            proof: vec![0x07; 64].into(),
        }
        .encode_to_vec(),
    );
    v.insert(
        "TaskEvent.progress",
        TaskEvent {
            event: Some(task_event::Event::Progress(TaskProgress { phase: "census".into(), done: 1, total: 3 })),
        }
        .encode_to_vec(),
    );
    v.insert(
        "TaskEvent.result",
        TaskEvent {
            event: Some(task_event::Event::Result(TaskResult {
                result_digest: vec![0x21; 32].into(),
                count: 0,
                intermediate_digests: vec![vec![0x22; 32].into()],
                result_file: "t-0001.csv".into(),
                count_withheld: true,
            })),
        }
        .encode_to_vec(),
    );
    v.insert("WatchTaskRequest", WatchTaskRequest { task_id: "t-0001".into() }.encode_to_vec());
    v.insert(
        "TaskUpdate",
        TaskUpdate {
            task_id: "t-0001".into(),
            state: TaskState::Succeeded as i32,
            phase: "done".into(),
            done: 5,
            total: 5,
            result_digest: "ab".into(),
            receiver: "bank".into(),
            error: String::new(),
            result_count: 300,
        }
        .encode_to_vec(),
    );
    let learning_open = LearningOpen {
        protocol_version: 1,
        task_id: "t-0002".into(),
        dataset: "bureau".into(),
        requester_size: 8000,
        key_columns: 1,
        normalisation: vec!["trim".into()],
        batch_size: 4096,
    };
    v.insert(
        "LearningRequesterMessage.open",
        LearningRequesterMessage { body: Some(learning_requester_message::Body::Open(learning_open)) }.encode_to_vec(),
    );
    v.insert(
        "LearningRequesterMessage.frame",
        LearningRequesterMessage {
            body: Some(learning_requester_message::Body::Frame(LearningFrame {
                chunk: vec![1, 0x12].into(),
                last: true,
            })),
        }
        .encode_to_vec(),
    );
    v.insert(
        "LearningRequesterMessage.psi",
        LearningRequesterMessage {
            body: Some(learning_requester_message::Body::Psi(PsiRequesterMessage {
                body: Some(psi_requester_message::Body::EchoTags(vec![0xbb; 12].into())),
            })),
        }
        .encode_to_vec(),
    );
    v.insert(
        "LearningResponderMessage.accept",
        LearningResponderMessage {
            body: Some(learning_responder_message::Body::Accept(LearningAccept { responder_size: 9000 })),
        }
        .encode_to_vec(),
    );
    v.insert(
        "LearningResponderMessage.summary",
        LearningResponderMessage {
            body: Some(learning_responder_message::Body::Summary(LearningSummary {
                aligned_rows: 7000,
                share_commitment: vec![0xcc; 32].into(),
            })),
        }
        .encode_to_vec(),
    );
    v
}

#[test]
fn messages_encode_as_recorded() {
    let computed: BTreeMap<String, String> =
        encoded().into_iter().map(|(name, bytes)| (name.to_owned(), hex::encode(bytes))).collect();
    if std::env::var_os("STAYPUT_WRITE_VECTORS").is_some() {
        std::fs::write(vectors_path(), serde_json::to_string_pretty(&computed).unwrap() + "\n").unwrap();
    }
    let stored: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    assert_eq!(stored, computed);
}

#[test]
fn recorded_bytes_decode_to_the_messages() {
    let stored: BTreeMap<String, String> =
        serde_json::from_str(&std::fs::read_to_string(vectors_path()).unwrap()).unwrap();
    let open_bytes = hex::decode(&stored["PsiOpen"]).unwrap();
    assert_eq!(PsiOpen::decode(open_bytes.as_slice()).unwrap(), open());
    // Field numbers a peer relies on: task_id is field 2 (tag 0x12), dataset field 3 (0x1a).
    assert_eq!(open_bytes[0..2], [0x08, 0x01], "protocol_version = 1 as field 1");
    assert_eq!(open_bytes[2], 0x12);
    let summary = hex::decode(&stored["PsiResponderMessage.summary"]).unwrap();
    let decoded = PsiResponderMessage::decode(summary.as_slice()).unwrap();
    assert_eq!(decoded.body, Some(psi_responder_message::Body::Summary(PsiSummary { responder_matches: 7 })));
}
