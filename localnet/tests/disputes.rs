//! A dispute of a blacklist listing end to end on loopback: the bank's
//! query finds an applicant listed; the bank files a dispute naming the
//! entry by its tag, the id sealed to the arbitrator; while it is open the
//! bank's results mark the listing `under_dispute`; the arbitrator opens
//! the id, takes the dispute up and overturns the listing; the bank's
//! results then report it `overturned`, not listed; a later version that
//! still holds the entry is refused before anything is asked or metered;
//! the corrected version no longer lists the applicant; a re-keyed version,
//! which could hide the entry under a new tag, is refused too.

use stayput_chain_connector::Ledger;
use stayput_chain_connector::records::{Computation, Dispute, DisputeState, OrgKey, Record, Role};
use stayput_chain_connector::tasks::{BlacklistParams, TaskParams};
use stayput_coordinator::client::{Phase, TaskReport, TaskSpec};
use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};

const SEALED_ID_LABEL: &[u8] = b"stayput/dispute/sealed-id/v1";

fn write_csv(path: &std::path::Path, header: &str, rows: impl Iterator<Item = String>) -> std::path::PathBuf {
    let text: Vec<String> = std::iter::once(header.to_owned()).chain(rows).collect();
    std::fs::write(path, text.join("\n")).unwrap();
    path.into()
}

fn participant(name: &str, roles: Vec<Role>, datasets: Vec<DatasetSpec>) -> Participant {
    Participant { spec: OrgSpec { name: name.into(), datasets }, display: name.into(), roles }
}

fn dataset(name: &str, path: std::path::PathBuf, labels: Option<&str>) -> DatasetSpec {
    DatasetSpec {
        name: name.into(),
        path,
        key_columns: vec!["national_id".into()],
        normalise: vec!["trim".into(), "uppercase".into()],
        labels: labels.map(str::to_owned),
        pir: None,
    }
}

async fn query(net: &LocalConsortium) -> (TaskReport, Vec<Vec<String>>) {
    let spec = TaskSpec {
        kind: Computation::Blacklist,
        datasets: vec!["blacklist".into()],
        receiver: "bank".into(),
        params: TaskParams::Blacklist(BlacklistParams {
            requester_dataset: "applicants".into(),
            bureau_datasets: vec!["blacklist".into()],
        }),
    };
    let submitted = net.submit("bank", &spec).await.unwrap();
    let report = net.client("bank").await.unwrap().follow(&submitted.task_id, |_| {}).await.unwrap();
    let out = &net.net.state("bank").config.output_dir;
    let text = std::fs::read_to_string(stayput_node::results::result_path(out, &submitted.task_id)).unwrap_or_default();
    let rows = text.lines().skip(1).map(|l| l.split(',').map(str::to_owned).collect()).collect();
    (report, rows)
}

fn row<'a>(rows: &'a [Vec<String>], key: &str) -> Option<&'a Vec<String>> {
    rows.iter().find(|r| r[0] == key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overturned_listing_binds_the_bureau_and_every_bank() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let applicants = write_csv(&d.join("applicants.csv"), "national_id,amount", (0..100).map(|i| format!("c{i:05},1")));
    let listed = |ids: &mut dyn Iterator<Item = u32>| {
        write_csv(&d.join("blacklist.csv"), "national_id,reason", ids.map(|i| format!("C{i:05},default")))
    };
    let blacklist = listed(&mut (90..190));
    let participants = [
        participant("bank", vec![Role::Requester], vec![dataset("applicants", applicants, None)]),
        participant("bureau", vec![Role::DataOwner], vec![dataset("blacklist", blacklist, Some("reason"))]),
        participant("court", vec![Role::Arbitrator], vec![]),
    ];
    let clock = stayput_chain_connector::embedded::system_clock();
    let net = LocalConsortium::start(d, &participants, clock).await.unwrap();
    net.publish_dataset("bureau", "blacklist").await.unwrap();
    let allow = vec![Computation::Blacklist];
    net.grant("bureau", "g-bank", "blacklist", "bank", allow, &["national_id", "reason"], 10, 3600).await.unwrap();

    // The first query lists ten applicants, each with its version and tag.
    let (report, rows) = query(&net).await;
    assert_eq!((report.phase, report.result_count), (Phase::Succeeded, 10), "{}", report.error);
    let contested = row(&rows, "C00093").expect("listed").clone();
    assert_eq!((contested[3].as_str(), contested[5].as_str()), ("1", "listed"));
    let mut tag = [0u8; 8];
    hex::decode_to_slice(&contested[4], &mut tag).unwrap();

    // The bank files: the id sealed to the court, the entry by its tag.
    let court = net.ledger.member("court").await.unwrap().unwrap();
    let sealed_id = OrgKey::seal_to(&court.signing_key, SEALED_ID_LABEL, b"d-1", b"C00093").unwrap();
    let deadline = stayput_coordinator::client::unix_now() + 30 * 86_400;
    let dispute = Dispute {
        id: "d-1".into(),
        dataset: "blacklist".into(),
        version: 1,
        tag,
        sealed_id: sealed_id.clone(),
        arbitrator: "court".into(),
        evidence_digest: [7; 32],
        deadline,
    };
    net.write("bank", Record::Dispute(dispute)).await.unwrap();
    assert!(!String::from_utf8_lossy(&sealed_id).contains("C00093"), "the id is not on the ledger");
    let (_, rows) = query(&net).await;
    assert_eq!(row(&rows, "C00093").unwrap()[5], "under_dispute");
    assert_eq!(row(&rows, "C00094").unwrap()[5], "listed");

    // The court opens the id, takes the dispute up and overturns it; the
    // bureau cannot rule on its own listing.
    let opened = net.key("court").open_sealed(SEALED_ID_LABEL, b"d-1", &sealed_id).unwrap();
    assert_eq!(opened.as_slice(), b"C00093");
    let rule = |state| Record::DisputeRuling { dispute: "d-1".into(), state };
    assert!(net.write("bureau", rule(DisputeState::UnderReview)).await.is_err());
    net.write("court", rule(DisputeState::UnderReview)).await.unwrap();
    net.write("court", rule(DisputeState::Overturned)).await.unwrap();
    let (report, rows) = query(&net).await;
    assert_eq!(report.result_count, 9, "an overturned listing is not a listing");
    assert_eq!(row(&rows, "C00093").unwrap()[5], "overturned");

    // A new version that still holds the entry defies the ruling: refused
    // before the bank asks anything, so nothing is metered.
    net.publish_dataset("bureau", "blacklist").await.unwrap();
    let (report, _) = query(&net).await;
    assert_eq!(report.phase, Phase::Failed);
    assert!(report.error.contains("still lists the entry overturned in dispute 'd-1'"), "{}", report.error);
    let trail = net.ledger.task(&report.task_id).await.unwrap().unwrap();
    assert!(trail.uses.is_empty(), "nothing was asked of the bureau");

    // The corrected version drops it: the applicant is no longer listed.
    listed(&mut (90..190).filter(|i| *i != 93));
    net.publish_dataset("bureau", "blacklist").await.unwrap();
    let (report, rows) = query(&net).await;
    assert_eq!((report.phase, report.result_count), (Phase::Succeeded, 9), "{}", report.error);
    assert!(row(&rows, "C00093").is_none());
    assert_eq!(row(&rows, "C00094").unwrap()[3], "3");

    // A bureau that re-keys its OPRF key would hide the entry under a new
    // tag (its own node keeps one key per list: a hostile bureau clears its
    // node's state first): a re-keyed version cannot show the entry is
    // gone, and is refused.
    let bureau = net.net.state("bureau").config.clone();
    std::fs::remove_file(bureau.dataset("blacklist").unwrap().labels.clone().unwrap().oprf_key).unwrap();
    std::fs::remove_dir_all(bureau.state_dir.join("labeled")).unwrap();
    listed(&mut (90..190));
    net.publish_dataset("bureau", "blacklist").await.unwrap();
    let (report, _) = query(&net).await;
    assert_eq!(report.phase, Phase::Failed);
    assert!(report.error.contains("under another OPRF key"), "{}", report.error);
    let trail = net.ledger.task(&report.task_id).await.unwrap().unwrap();
    assert!(trail.uses.is_empty(), "nothing was asked of the bureau");
    net.shutdown().await.unwrap();
}
