//! `stayput bench train`: vertical SecureBoost between a label holder and
//! a feature holder — the protocol's own cost, its messages passed in
//! memory, both parties sharing this machine's cores — with the Paillier
//! operations it is made of measured in the same run, and the test AUC.
//!
//! Given SecretFlow's data folder (`sf_vfl.py --data-dir D` writes
//! `D/vfl_r<N>_s<seed>/*.npy`: label and features f0–f9 at the label
//! holder, f10–f19 at the feature holder, 80 % train), it trains on exactly
//! the rows SecretFlow's SGB trains on, so both figures go in one table.

use std::path::Path;
use std::time::Instant;

use rand10::SeedableRng;
use stayput_learning::boost::{BoostParams, FeatureHolder, LabelHolder, ToFeatureHolder, ToLabelHolder};
use stayput_learning::paillier::{CIPHERTEXT_BYTES, SecretKey, plaintext_from_u128};
use stayput_learning::split::TreeParams;

use crate::BenchError;

/// Columns `[f][row]` and labels of one split (train or test).
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// The label holder's features.
    pub label_holder: Vec<Vec<f64>>,
    /// The feature holder's features.
    pub feature_holder: Vec<Vec<f64>>,
    /// Labels, 0 or 1.
    pub labels: Vec<u8>,
}

/// What a run measured.
#[derive(Debug)]
pub struct TrainBenchReport {
    source: String,
    train_rows: usize,
    test_rows: usize,
    features: (usize, usize),
    params: BoostParams,
    keygen_s: f64,
    encrypt_per_s: f64,
    add_per_s: f64,
    decrypt_per_s: f64,
    train_s: f64,
    messages: usize,
    ciphertext_bytes: usize,
    predict_s: f64,
    auc: f64,
}

impl std::fmt::Display for TrainBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = &self.params;
        writeln!(
            f,
            "train bench: vertical SecureBoost (Paillier-2048), {} trees of depth {}, {} bins, learning rate {}, λ {}; {}",
            p.trees, p.tree.max_depth, p.max_bins, p.tree.learning_rate, p.tree.lambda, self.source
        )?;
        writeln!(
            f,
            "  rows: {} train, {} test; features: {} at the label holder, {} at the feature holder",
            self.train_rows, self.test_rows, self.features.0, self.features.1
        )?;
        writeln!(
            f,
            "  paillier: key {:.2} s; encrypt {:.0}/s (all cores, CRT); add {:.0}/s; decrypt {:.0}/s",
            self.keygen_s, self.encrypt_per_s, self.add_per_s, self.decrypt_per_s
        )?;
        writeln!(
            f,
            "  train: {:.2} s, {} messages, {:.1} MiB of ciphertexts",
            self.train_s,
            self.messages,
            self.ciphertext_bytes as f64 / f64::from(1u32 << 20)
        )?;
        write!(f, "  predict: {:.3} s for {} rows; test AUC {:.4}", self.predict_s, self.test_rows, self.auc)
    }
}

fn io(path: &Path, e: impl std::fmt::Display) -> BenchError {
    BenchError::Io { path: path.into(), source: std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()) }
}

impl TrainBenchReport {
    /// The in-memory protocol's training time.
    pub fn train_seconds(&self) -> f64 {
        self.train_s
    }
}

/// Reads a little-endian float32/float64 `.npy` array (1-D or 2-D, C order)
/// as rows of columns: `(shape, values)`.
pub fn read_npy(path: &Path) -> Result<(Vec<usize>, Vec<f64>), BenchError> {
    let bytes = std::fs::read(path).map_err(|e| BenchError::Io { path: path.into(), source: e })?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(io(path, "not a .npy file"));
    }
    let (header_len, start) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(io(path, format!(".npy version {v} is not supported"))),
    };
    let header = bytes.get(start..start + header_len).ok_or_else(|| io(path, "the header is cut short"))?;
    let header = std::str::from_utf8(header).map_err(|e| io(path, e))?;
    let width = if header.contains("'<f4'") {
        4
    } else if header.contains("'<f8'") {
        8
    } else {
        return Err(io(path, "only little-endian float32 or float64 arrays are read"));
    };
    if header.contains("'fortran_order': True") {
        return Err(io(path, "Fortran-order arrays are not read"));
    }
    let shape_text = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(['(', ')']).nth(1))
        .ok_or_else(|| io(path, "no shape in the header"))?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|e| io(path, e)))
        .collect::<Result<_, _>>()?;
    let count: usize = shape.iter().product();
    let data = &bytes[start + header_len..];
    if data.len() != count * width {
        return Err(io(path, format!("{} bytes of data for shape {shape:?}", data.len())));
    }
    let values = data
        .chunks_exact(width)
        .map(|c| match c {
            [a, b, c, d] => f64::from(f32::from_le_bytes([*a, *b, *c, *d])),
            _ => f64::from_le_bytes(c.try_into().expect("8 bytes")),
        })
        .collect();
    Ok((shape, values))
}

fn columns(path: &Path) -> Result<Vec<Vec<f64>>, BenchError> {
    let (shape, values) = read_npy(path)?;
    let [rows, cols] = shape[..] else { return Err(io(path, format!("expected a 2-D array, got {shape:?}"))) };
    Ok((0..cols).map(|c| (0..rows).map(|r| values[r * cols + c]).collect()).collect())
}

fn labels(path: &Path) -> Result<Vec<u8>, BenchError> {
    let (_, values) = read_npy(path)?;
    Ok(values.iter().map(|v| u8::from(*v > 0.5)).collect())
}

/// SecretFlow's split of its data folder.
pub fn load_secretflow(dir: &Path) -> Result<(Split, Split), BenchError> {
    let part = |name: &str| dir.join(format!("{name}.npy"));
    let split = |kind: &str| -> Result<Split, BenchError> {
        Ok(Split {
            label_holder: columns(&part(&format!("alice_x_{kind}")))?,
            feature_holder: columns(&part(&format!("bob_x_{kind}")))?,
            labels: labels(&part(&format!("y_{kind}")))?,
        })
    };
    Ok((split("train")?, split("test")?))
}

/// A synthetic credit-like set: 10 + 10 standard-normal features, the
/// label drawn from a logistic model over both parties' features.
pub fn synthetic(rows: usize, seed: u64) -> (Split, Split) {
    use rand10::RngExt;
    let mut rng = rand10::rngs::StdRng::seed_from_u64(seed);
    let mut normal = move || {
        let (u, v): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random_range(0.0..1.0));
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos(), v)
    };
    let mut all =
        Split { label_holder: vec![Vec::new(); 10], feature_holder: vec![Vec::new(); 10], labels: Vec::new() };
    for _ in 0..rows {
        let x: Vec<f64> = (0..20).map(|_| normal().0).collect();
        let logit = 0.9 * x[0] - 0.7 * x[1] + 0.5 * x[2] + 0.8 * x[10] - 0.6 * x[11] + 0.5 * x[12].abs() - 1.5;
        let p = 1.0 / (1.0 + (-logit).exp());
        all.labels.push(u8::from(normal().1 < p));
        for (f, v) in x.iter().enumerate() {
            if f < 10 { all.label_holder[f].push(*v) } else { all.feature_holder[f - 10].push(*v) }
        }
    }
    let cut = rows * 4 / 5;
    let take = |s: &Split, range: std::ops::Range<usize>| Split {
        label_holder: s.label_holder.iter().map(|c| c[range.clone()].to_vec()).collect(),
        feature_holder: s.feature_holder.iter().map(|c| c[range.clone()].to_vec()).collect(),
        labels: s.labels[range.clone()].to_vec(),
    };
    (take(&all, 0..cut), take(&all, cut..rows))
}

pub use stayput_learning::metrics::auc;

/// Trains on `train`, scores `test`, and measures the Paillier operations.
pub fn run(train: &Split, test: &Split, params: BoostParams, source: String) -> Result<TrainBenchReport, BenchError> {
    let mut rng = rand10::rng();

    // The operations, on this machine, now.
    let started = Instant::now();
    let key = SecretKey::generate(&mut rng);
    let keygen_s = started.elapsed().as_secs_f64();
    let public = key.public();
    let plaintexts: Vec<_> = (0..512u128).map(|i| plaintext_from_u128(i << 80 | i)).collect();
    let started = Instant::now();
    let ciphertexts = key.encrypt_all(&plaintexts, &mut rng)?;
    let encrypt_per_s = plaintexts.len() as f64 / started.elapsed().as_secs_f64();
    let prepared: Vec<_> = ciphertexts.iter().map(|c| public.prepare(c)).collect();
    let started = Instant::now();
    let mut sum = public.zero();
    for _ in 0..40 {
        for c in &prepared {
            sum = public.add(&sum, c);
        }
    }
    let add_per_s = (40 * prepared.len()) as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let decrypted: Vec<_> = ciphertexts.iter().take(64).map(|c| key.decrypt(c)).collect();
    let decrypt_per_s = decrypted.len() as f64 / started.elapsed().as_secs_f64();
    if decrypted[..] != plaintexts[..64] || key.decrypt(&public.finish(&sum)) == plaintexts[0] {
        return Err(BenchError::WrongResult { expected: 64, got: 0 });
    }

    // Training.
    let started = Instant::now();
    let mut peer = FeatureHolder::new(&train.feature_holder, params, &mut rng)?;
    let (mut holder, mut outbox) = LabelHolder::start(&train.labels, &train.label_holder, params, &mut rng)?;
    let (mut messages, mut ciphertext_bytes) = (0, 0);
    let mut queue = std::collections::VecDeque::from(std::mem::take(&mut outbox));
    while let Some(message) = queue.pop_front() {
        messages += 1;
        if let ToFeatureHolder::Gradients { ciphertexts, .. } = &message {
            ciphertext_bytes += ciphertexts.len() * CIPHERTEXT_BYTES;
        }
        if let Some(answer) = peer.on_message(message)? {
            messages += 1;
            if let ToLabelHolder::Histogram { packed, .. } = &answer {
                ciphertext_bytes += packed.len() * CIPHERTEXT_BYTES;
            }
            queue.extend(holder.on_message(answer, &mut rng)?);
        }
    }
    let train_s = started.elapsed().as_secs_f64();
    let model = holder.model().ok_or(BenchError::WrongResult { expected: u64::from(params.trees), got: 0 })?;

    let started = Instant::now();
    let masks = peer.model().leaf_masks(&test.feature_holder)?;
    let scores = model.predict(&test.label_holder, &masks)?;
    let predict_s = started.elapsed().as_secs_f64();
    Ok(TrainBenchReport {
        source,
        train_rows: train.labels.len(),
        test_rows: test.labels.len(),
        features: (train.label_holder.len(), train.feature_holder.len()),
        params,
        keygen_s,
        encrypt_per_s,
        add_per_s,
        decrypt_per_s,
        train_s,
        messages,
        ciphertext_bytes,
        predict_s,
        auc: auc(&scores, &test.labels),
    })
}

/// The same training and scoring carried by two nodes.
#[derive(Debug)]
pub struct NodesReport {
    /// The in-memory protocol's training time, for the ratio.
    in_memory_s: f64,
    train_s: f64,
    predict_s: f64,
    aligned: u64,
    scored: usize,
    auc: f64,
}

impl std::fmt::Display for NodesReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "  over two nodes (mTLS on loopback, embedded ledger, rows aligned by PSI inside the task): train {:.2} s on {} aligned rows ({:.2}× the in-memory protocol)",
            self.train_s,
            self.aligned,
            self.train_s / self.in_memory_s
        )?;
        write!(f, "  predict task: {:.2} s for {} applicants; test AUC {:.4}", self.predict_s, self.scored, self.auc)
    }
}

/// Rows as CSV text: `id` (prefix and row number), the label (when
/// given), then `x0…` (an empty field for a missing value); with the
/// header line when `header`.
fn csv_rows(prefix: &str, columns: &[Vec<f64>], labels: Option<&[u8]>, header: bool) -> String {
    use std::fmt::Write as _;
    let mut text = String::new();
    if header {
        text.push_str(if labels.is_some() { "id,y" } else { "id" });
        (0..columns.len()).for_each(|c| {
            let _ = write!(text, ",x{c}");
        });
        text.push('\n');
    }
    let rows = columns.first().map_or_else(|| labels.map_or(0, <[u8]>::len), Vec::len);
    for r in 0..rows {
        let _ = write!(text, "{prefix}{r}");
        if let Some(labels) = labels {
            let _ = write!(text, ",{}", labels[r]);
        }
        for c in columns {
            if c[r].is_nan() {
                text.push(',');
            } else {
                let _ = write!(text, ",{}", c[r]);
            }
        }
        text.push('\n');
    }
    text
}

/// Trains and scores as two organisations would: a bank node with the
/// labels and the label holder's columns, a bureau node with the feature
/// holder's columns of the train and test rows, a coordinator and an
/// embedded ledger, on loopback; `in_memory_s` is the in-memory protocol's
/// training time from the same run.
pub fn over_nodes(
    train: &Split,
    test: &Split,
    params: BoostParams,
    in_memory_s: f64,
) -> Result<NodesReport, BenchError> {
    use stayput_chain_connector::records::{Computation, Role};
    use stayput_chain_connector::tasks::{ModelSpec, PredictParams, TaskParams, TrainParams};
    use stayput_coordinator::client::{Phase, TaskSpec};
    use stayput_localnet::{DatasetSpec, LocalConsortium, OrgSpec, Participant};

    let dir = tempfile::tempdir().map_err(|source| BenchError::Io { path: "(temp)".into(), source })?;
    let d = dir.path();
    let write = |file: &str, text: String| {
        std::fs::write(d.join(file), text).map_err(|source| BenchError::Io { path: d.join(file), source })
    };
    write("history.csv", csv_rows("r", &train.label_holder, Some(&train.labels), true))?;
    write("applicants.csv", csv_rows("t", &test.label_holder, None, true))?;
    // The bureau holds the train rows (r<i>) and the applicants (t<i>).
    let bureau = csv_rows("r", &train.feature_holder, None, true) + &csv_rows("t", &test.feature_holder, None, false);
    write("bureau.csv", bureau)?;
    let dataset = |name: &str, file: &str| DatasetSpec {
        name: name.into(),
        path: d.join(file),
        key_columns: vec!["id".into()],
        normalise: vec![],
        labels: None,
        pir: None,
    };
    let participants = [
        Participant {
            spec: OrgSpec {
                name: "bank".into(),
                datasets: vec![dataset("history", "history.csv"), dataset("applicants", "applicants.csv")],
            },
            display: "Bank".into(),
            roles: vec![Role::Requester, Role::DataOwner],
        },
        Participant {
            spec: OrgSpec { name: "bureau".into(), datasets: vec![dataset("bureau", "bureau.csv")] },
            display: "Bureau".into(),
            roles: vec![Role::DataOwner],
        },
    ];
    let features = |n: usize| (0..n).map(|c| format!("x{c}")).collect::<Vec<_>>();
    let peer_features = features(train.feature_holder.len());
    let mut granted: Vec<&str> = vec!["id"];
    granted.extend(peer_features.iter().map(String::as_str));
    let model = ModelSpec::BoostedTrees {
        trees: params.trees,
        max_bins: u32::try_from(params.max_bins).unwrap_or(u32::MAX),
        max_depth: params.tree.max_depth,
        learning_rate: params.tree.learning_rate,
        min_child_weight: params.tree.min_child_weight,
        lambda: params.tree.lambda,
        gamma: params.tree.gamma,
        min_node_rows: params.tree.min_node_rows,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| BenchError::Io { path: "(runtime)".into(), source })?;
    let failed = |e: String| BenchError::Task(e);
    let (train_s, aligned, predict_s, result) = runtime.block_on(async {
        let clock = stayput_chain_connector::embedded::system_clock();
        let net = LocalConsortium::start(d, &participants, clock).await?;
        net.publish_dataset("bureau", "bureau").await?;
        let kinds = vec![Computation::Train, Computation::Predict];
        net.grant("bureau", "g-bench", "bureau", "bank", kinds, &granted, 10, 3600).await?;
        let run = |spec: TaskSpec| {
            let net = &net;
            async move {
                let started = Instant::now();
                let submitted = net.submit("bank", &spec).await.map_err(|e| failed(e.to_string()))?;
                let mut client = net.client("bank").await.map_err(|e| failed(e.to_string()))?;
                let report = client.follow(&submitted.task_id, |_| {}).await.map_err(|e| failed(e.to_string()))?;
                if report.phase != Phase::Succeeded {
                    return Err(failed(report.error));
                }
                Ok::<_, BenchError>((started.elapsed().as_secs_f64(), submitted.task_id, report.result_count))
            }
        };
        let trained = TaskSpec {
            kind: Computation::Train,
            datasets: vec!["bureau".into()],
            receiver: "bank".into(),
            params: TaskParams::Train(TrainParams {
                requester_dataset: "history".into(),
                peer_dataset: "bureau".into(),
                label: "y".into(),
                features: features(train.label_holder.len()),
                peer_features: peer_features.clone(),
                model,
            }),
        };
        let (train_s, model_task, aligned) = run(trained).await?;
        let scoring = TaskSpec {
            kind: Computation::Predict,
            datasets: vec!["bureau".into()],
            receiver: "bank".into(),
            params: TaskParams::Predict(PredictParams {
                model_task,
                requester_dataset: "applicants".into(),
                peer_dataset: "bureau".into(),
            }),
        };
        let (predict_s, scored_task, _) = run(scoring).await?;
        let out = net.net.state("bank").config.output_dir.clone();
        let result = stayput_node::results::result_file(&out, &scored_task);
        net.shutdown().await?;
        Ok::<_, BenchError>((train_s, aligned, predict_s, result))
    })?;
    let table = std::fs::read_to_string(&result).map_err(|source| BenchError::Io { path: result.clone(), source })?;
    let mut scores = vec![f64::NAN; test.labels.len()];
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let row = fields.first().and_then(|id| id.strip_prefix('t')).and_then(|r| r.parse::<usize>().ok());
        match (row, fields.get(1).and_then(|s| s.parse::<f64>().ok())) {
            (Some(r), Some(score)) if r < scores.len() => scores[r] = score,
            _ => return Err(failed(format!("an unexpected scoring row: {line}"))),
        }
    }
    if scores.iter().any(|s| s.is_nan()) {
        return Err(BenchError::WrongResult { expected: test.labels.len() as u64, got: 0 });
    }
    Ok(NodesReport { in_memory_s, train_s, predict_s, aligned, scored: scores.len(), auc: auc(&scores, &test.labels) })
}

/// The parameters SecretFlow's peer script trains with (its defaults).
pub fn secretflow_like(trees: u32, depth: u32, max_bins: usize) -> BoostParams {
    BoostParams {
        trees,
        max_bins,
        tree: TreeParams {
            learning_rate: 0.3,
            max_depth: depth,
            min_child_weight: 1.0,
            lambda: 1.0,
            gamma: 0.0,
            min_node_rows: 1,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_files_are_read_and_bad_ones_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.npy");
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
        let mut padded = header.to_owned();
        while !(10 + padded.len() + 1).is_multiple_of(64) {
            padded.push(' ');
        }
        padded.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend(u16::try_from(padded.len()).unwrap().to_le_bytes());
        bytes.extend(padded.as_bytes());
        for v in [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0] {
            bytes.extend(v.to_le_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(columns(&path).unwrap(), vec![vec![1.0, 4.0], vec![2.0, 5.0], vec![3.0, 6.0]]);
        std::fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        assert!(columns(&path).unwrap_err().to_string().contains("bytes of data"));
        std::fs::write(&path, b"not numpy").unwrap();
        assert!(read_npy(&path).is_err());
    }

    #[test]
    fn a_small_run_learns() {
        let (train, test) = synthetic(400, 3);
        let params = BoostParams {
            trees: 2,
            max_bins: 8,
            tree: TreeParams { max_depth: 2, min_node_rows: 10, ..TreeParams::default() },
        };
        let report = run(&train, &test, params, "synthetic".into()).unwrap();
        assert!(report.auc > 0.65, "{report}");
        // The same over two nodes: every train row aligned, every test row
        // scored, the same model up to the tie-breaking of equal gains.
        let carried = over_nodes(&train, &test, params, report.train_seconds()).unwrap();
        assert_eq!((carried.aligned, carried.scored), (train.labels.len() as u64, test.labels.len()));
        assert!((carried.auc - report.auc).abs() < 0.05, "{carried} vs {report}");
        assert!(report.to_string().contains("test AUC"));
    }
}
