//! Federated statistics end to end in memory: random tables split across
//! sites, local statistics, secret sharing, reconstruction, finishing —
//! compared with the same statistics computed plainly on the merged table.

use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use proptest::prelude::*;
use rand::SeedableRng;
use stayput_mpc_engine::MpcError;
use stayput_mpc_engine::finish::{GroupResult, Value, finish};
use stayput_mpc_engine::local::{LocalScan, LocalStats, vector_len};
use stayput_mpc_engine::query::CohortQuery;
use stayput_mpc_engine::sharing::{Aggregator, Reconstruction, split};

/// One patient row: age, sex, bmi (maybe missing), systolic, diagnosis.
#[derive(Debug, Clone)]
struct Row {
    age: f64,
    sex: &'static str,
    bmi: Option<f64>,
    sbp: f64,
    dx: &'static str,
}

fn batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("age", DataType::Utf8, true),
        Field::new("sex", DataType::Utf8, true),
        Field::new("bmi", DataType::Float64, true),
        Field::new("systolic_bp", DataType::Float64, true),
        Field::new("diagnosis", DataType::Utf8, true),
    ]));
    let columns: Vec<ArrayRef> = vec![
        // Ages as CSV text, as the node's CSV reader delivers them.
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| format!(" {} ", r.age)))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.sex))),
        Arc::new(Float64Array::from(rows.iter().map(|r| r.bmi).collect::<Vec<_>>())),
        Arc::new(Float64Array::from(rows.iter().map(|r| r.sbp).collect::<Vec<_>>())),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.dx))),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

const QUERY: &str = r#"
precision = 2
ranges = { age = [0, 120], systolic_bp = [50, 260], bmi = [10, 70] }
filter = { all = [ { column = "diagnosis", is_in = ["I10", "E11"] }, { column = "age", ge = 30 } ] }
group_by = { column = "sex", values = ["F", "M"] }

[[measures]]
kind = "count"

[[measures]]
kind = "mean"
column = "systolic_bp"

[[measures]]
kind = "std_dev"
column = "systolic_bp"

[[measures]]
kind = "min"
column = "age"

[[measures]]
kind = "max"
column = "systolic_bp"

[[measures]]
kind = "histogram"
column = "age"
edges = [30, 50, 70, 90]

[[measures]]
kind = "correlation"
x = "systolic_bp"
y = "bmi"

[[measures]]
kind = "covariance"
x = "systolic_bp"
y = "age"

[[measures]]
kind = "regression"
y = "systolic_bp"
x = ["age", "bmi"]
"#;

fn local(query: &CohortQuery, rows: &[Row]) -> LocalStats {
    let mut scan = LocalScan::new(query).unwrap();
    // Two batches per site, as a streaming reader would deliver them.
    let (a, b) = rows.split_at(rows.len() / 2);
    scan.absorb(&batch(a)).unwrap();
    scan.absorb(&batch(b)).unwrap();
    scan.finish()
}

/// The whole protocol among `sites`, in memory.
fn federated(query: &CohortQuery, sites: &[Vec<Row>]) -> Result<Vec<GroupResult>, MpcError> {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(99);
    let names: Vec<String> = (0..sites.len()).map(|i| format!("h{i}")).collect();
    let stats: Vec<LocalStats> = sites.iter().map(|rows| local(query, rows)).collect();
    let len = vector_len(query);
    let shares: Vec<_> = stats.iter().map(|s| split(&s.additive, sites.len(), &mut rng)).collect::<Result<_, _>>()?;
    let mut reconstruction = Reconstruction::new(&names, len);
    for (j, name) in names.iter().enumerate() {
        let mut agg = Aggregator::new(&names, len);
        for (i, from) in names.iter().enumerate() {
            agg.absorb(from, shares[i][j].clone())?;
        }
        reconstruction.absorb(name, agg.finish()?)?;
    }
    let pooled = reconstruction.finish()?;
    // Extrema are pooled in the clear here; under TFHE in the node.
    let mut extrema = stats[0].extrema.clone();
    for s in &stats[1..] {
        for (k, e) in s.extrema.iter().enumerate() {
            let is_min = (k % 2) == 0; // query order: min(age), max(systolic_bp)
            extrema[k] = match (extrema[k], *e) {
                (Some(a), Some(b)) => Some(if is_min { a.min(b) } else { a.max(b) }),
                (a, b) => a.or(b),
            };
        }
    }
    finish(query, &pooled, &extrema)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn number(g: &GroupResult, label: &str) -> (u64, Option<f64>) {
    match &g.measures.iter().find(|m| m.label == label).unwrap().value {
        Value::Number { n, value } => (*n, *value),
        other => panic!("{label}: {other:?}"),
    }
}

fn close(a: f64, b: f64, what: &str) {
    assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{what}: {a} vs {b}");
}

fn check_against_plain(query: &CohortQuery, sites: &[Vec<Row>]) {
    let results = federated(query, sites).unwrap();
    let merged: Vec<Row> = sites.concat();
    for (g, sex) in results.iter().zip(["F", "M"]) {
        let cohort: Vec<&Row> =
            merged.iter().filter(|r| r.sex == sex && ["I10", "E11"].contains(&r.dx) && r.age >= 30.0).collect();
        assert_eq!(g.count, cohort.len() as u64);
        let sbp: Vec<f64> = cohort.iter().map(|r| round2(r.sbp)).collect();
        let n = sbp.len() as f64;
        let (count, mean) = number(g, "mean(systolic_bp)");
        assert_eq!(count, sbp.len() as u64);
        if sbp.len() < 3 {
            continue;
        }
        let plain_mean = sbp.iter().sum::<f64>() / n;
        close(mean.unwrap(), plain_mean, "mean");
        let var = sbp.iter().map(|x| (x - plain_mean).powi(2)).sum::<f64>() / (n - 1.0);
        close(number(g, "stddev(systolic_bp)").1.unwrap(), var.sqrt(), "stddev");
        let min_age = cohort.iter().map(|r| round2(r.age)).fold(f64::INFINITY, f64::min);
        close(number(g, "min(age)").1.unwrap(), min_age, "min");
        let max_sbp = sbp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        close(number(g, "max(systolic_bp)").1.unwrap(), max_sbp, "max");
        // Complete cases for the pair.
        let pairs: Vec<(f64, f64)> = cohort.iter().filter_map(|r| r.bmi.map(|b| (round2(r.sbp), round2(b)))).collect();
        let m = pairs.len() as f64;
        let (mx, my) = (pairs.iter().map(|p| p.0).sum::<f64>() / m, pairs.iter().map(|p| p.1).sum::<f64>() / m);
        let sxy: f64 = pairs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
        let sxx: f64 = pairs.iter().map(|(x, _)| (x - mx).powi(2)).sum();
        let syy: f64 = pairs.iter().map(|(_, y)| (y - my).powi(2)).sum();
        let (pn, corr) = number(g, "correlation(systolic_bp, bmi)");
        assert_eq!(pn, pairs.len() as u64, "complete cases");
        close(corr.unwrap(), sxy / (sxx * syy).sqrt(), "correlation");
        let ages: Vec<f64> = cohort.iter().map(|r| round2(r.age)).collect();
        let ma = ages.iter().sum::<f64>() / n;
        let cov: f64 = sbp.iter().zip(&ages).map(|(s, a)| (s - plain_mean) * (a - ma)).sum::<f64>() / (n - 1.0);
        close(number(g, "covariance(systolic_bp, age)").1.unwrap(), cov, "covariance");
        let hist = match &g.measures.iter().find(|m| m.label == "histogram(age)").unwrap().value {
            Value::Histogram(bins) => bins.iter().map(|b| b.1).collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        let plain_hist: Vec<u64> =
            [(f64::NEG_INFINITY, 30.0), (30.0, 50.0), (50.0, 70.0), (70.0, 90.0), (90.0, f64::INFINITY)]
                .iter()
                .map(|(lo, hi)| ages.iter().filter(|a| **a >= *lo && **a < *hi).count() as u64)
                .collect();
        assert_eq!(hist, plain_hist);
        // Regression: the fitted coefficients satisfy the plain normal equations.
        if let Value::Regression { n: rn, coefficients, r_squared } =
            &g.measures.iter().find(|m| m.label.starts_with("regression")).unwrap().value
        {
            let rows: Vec<(f64, f64, f64)> =
                cohort.iter().filter_map(|r| r.bmi.map(|b| (round2(r.age), round2(b), round2(r.sbp)))).collect();
            assert_eq!(*rn, rows.len() as u64);
            if rows.len() > 5 {
                let b: Vec<f64> = coefficients.iter().map(|c| c.1).collect();
                let residual = |r: &(f64, f64, f64)| r.2 - (b[0] + b[1] * r.0 + b[2] * r.1);
                // Residuals are orthogonal to each regressor.
                let scale: f64 = rows.iter().map(|r| r.2.abs()).sum();
                for column in [|_: &(f64, f64, f64)| 1.0, |r: &(f64, f64, f64)| r.0, |r: &(f64, f64, f64)| r.1] {
                    let dot: f64 = rows.iter().map(|r| residual(r) * column(r)).sum();
                    assert!(dot.abs() < 1e-6 * scale * 100.0, "normal equations: {dot}");
                }
                let my = rows.iter().map(|r| r.2).sum::<f64>() / rows.len() as f64;
                let sst: f64 = rows.iter().map(|r| (r.2 - my).powi(2)).sum();
                let sse: f64 = rows.iter().map(|r| residual(r).powi(2)).sum();
                close(*r_squared, 1.0 - sse / sst, "r²");
            }
        }
    }
}

fn row_strategy() -> impl Strategy<Value = Row> {
    (18.0..95.0f64, prop::bool::ANY, prop::option::weighted(0.9, 16.0..45.0f64), 90.0..200.0f64, 0..4usize).prop_map(
        |(age, female, bmi, sbp, dx)| Row {
            age,
            sex: if female { "F" } else { "M" },
            bmi,
            sbp,
            dx: ["I10", "E11", "J44", "N18"][dx],
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn pooled_statistics_equal_the_merged_table(
        sites in prop::collection::vec(prop::collection::vec(row_strategy(), 10..120), 2..5)
    ) {
        let query = CohortQuery::from_toml(QUERY).unwrap();
        check_against_plain(&query, &sites);
    }
}

#[test]
fn every_honest_vector_lies_within_its_entry_bounds() {
    let query = CohortQuery::from_toml(QUERY).unwrap();
    let rows: Vec<Row> = (0..200)
        .map(|i| Row {
            age: f64::from(i % 120),
            sex: if i % 2 == 0 { "F" } else { "M" },
            bmi: Some(10.0 + f64::from(i % 60)),
            sbp: 50.0 + f64::from(i),
            dx: "I10",
        })
        .collect();
    let stats = local(&query, &rows);
    let bounds = stayput_mpc_engine::local::entry_bounds(&query, 200).unwrap();
    assert_eq!(bounds.len(), stats.additive.len());
    for (k, (v, (lo, hi))) in stats.additive.iter().zip(&bounds).enumerate() {
        assert!(lo <= v && v <= hi, "entry {k}: {v} not in [{lo}, {hi}]");
    }
    let mut outside = rows.clone();
    outside[3].sbp = 400.0;
    let mut scan = LocalScan::new(&query).unwrap();
    let err = scan.absorb(&batch(&outside)).unwrap_err();
    assert!(err.to_string().contains("outside its declared range"), "{err}");
}

#[test]
fn a_site_that_drops_out_aborts_the_aggregation() {
    let query = CohortQuery::from_toml(QUERY).unwrap();
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
    let names = vec!["h0".to_string(), "h1".to_string(), "h2".to_string()];
    let rows = vec![Row { age: 50.0, sex: "F", bmi: Some(25.0), sbp: 130.0, dx: "I10" }; 10];
    let shares = split(&local(&query, &rows).additive, 3, &mut rng).unwrap();
    let mut agg = Aggregator::new(&names, vector_len(&query));
    agg.absorb("h0", shares[0].clone()).unwrap();
    agg.absorb("h1", shares[1].clone()).unwrap();
    let err = agg.finish().unwrap_err();
    assert!(matches!(err, MpcError::Missing(ref who) if who == "h2"), "{err}");
    // The requester without one aggregator's partial sum releases nothing.
    let mut request = Reconstruction::new(&names, vector_len(&query));
    request.absorb("h0", shares[0].clone()).unwrap();
    assert!(request.finish().is_err());
}

#[test]
fn queries_are_checked_against_schema_and_grant_before_running() {
    let query = CohortQuery::from_toml(QUERY).unwrap();
    let schema = ["age", "sex", "bmi", "systolic_bp", "diagnosis"];
    query.validate(&schema, &[]).unwrap();
    let allowed: Vec<String> = ["age", "sex", "systolic_bp", "diagnosis"].map(String::from).to_vec();
    let err = query.validate(&schema, &allowed).unwrap_err();
    assert_eq!(err, MpcError::ColumnNotAllowed { column: "bmi".into(), allowed: allowed.join(", ") });
    let err = query.validate(&["age", "sex"], &[]).unwrap_err();
    assert!(err.to_string().contains("unknown column 'diagnosis'"), "{err}");
    let bad = CohortQuery::from_toml("[[measures]]\nkind = \"median\"\ncolumn = \"age\"\n").unwrap_err();
    assert!(bad.to_string().contains("median"), "{bad}");
    let two_tests = r#"
filter = { column = "age", gt = 3, lt = 9 }
[[measures]]
kind = "count"
"#;
    // Shape errors are refused when the query is decoded.
    let err = CohortQuery::from_toml(two_tests).unwrap_err();
    assert!(err.to_string().contains("exactly one"), "{err}");
    let no_range = CohortQuery::from_toml("[[measures]]\nkind = \"mean\"\ncolumn = \"age\"\n").unwrap_err();
    assert!(no_range.to_string().contains("declare the range of 'age'"), "{no_range}");
    // JSON round trip of the canonical form.
    assert_eq!(CohortQuery::from_json(&query.to_canonical_json()).unwrap(), query);
}

#[test]
fn text_in_a_numeric_column_fails_loudly_without_values() {
    let query =
        CohortQuery::from_toml("ranges = { age = [0, 120] }\n[[measures]]\nkind = \"mean\"\ncolumn = \"age\"\n")
            .unwrap();
    let mut rows = vec![Row { age: 50.0, sex: "F", bmi: None, sbp: 130.0, dx: "I10" }; 3];
    rows[1].age = 51.0;
    let mut b = batch(&rows);
    let mut columns = b.columns().to_vec();
    columns[0] = Arc::new(StringArray::from(vec![Some("50"), Some("fifty-one"), None]));
    b = RecordBatch::try_new(b.schema(), columns).unwrap();
    let err = LocalScan::new(&query).unwrap().absorb(&b).unwrap_err();
    assert_eq!(err, MpcError::NotNumeric { column: "age".into(), count: 1 });
    assert!(!err.to_string().contains("fifty"));
}
