//! A compute-only release without noise equals a plain computation on the
//! same rows: gridded, banded, monthly groups; counts, means and
//! histograms; groups below the minimum left out.
#![allow(clippy::cast_possible_truncation)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, Float64Array, Int64Array, StringArray, TimestampSecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use proptest::prelude::*;
use rand::SeedableRng;
use stayput_mpc_engine::binning::days_from_civil;
use stayput_mpc_engine::local::LocalScan;
use stayput_mpc_engine::query::CohortQuery;
use stayput_mpc_engine::release::{Disclosure, release};

#[derive(Debug, Clone)]
struct Obs {
    lat: f64,
    lon: f64,
    day: i64,
    depth: f64,
    temperature: Option<f64>,
}

const QUERY: &str = r#"
precision = 2
ranges = { temperature_c = [-2, 35] }
[[bins]]
kind = "grid"
lat = "lat"
lon = "lon"
cell_degrees = 0.5
lat_range = [30, 32]
lon_range = [-20, -19]
[[bins]]
kind = "bands"
column = "depth_m"
edges = [0, 50, 200]
[[bins]]
kind = "time"
column = "time"
window = "month"
from = "2024-11-01"
to = "2025-03-01"
[[measures]]
kind = "mean"
column = "temperature_c"
[[measures]]
kind = "histogram"
column = "temperature_c"
edges = [10, 20]
"#;

fn obs() -> impl Strategy<Value = Obs> {
    let start = days_from_civil(2024, 10, 15);
    (29.8f64..32.2, -20.2f64..-18.8, start..start + 150, 0.0f64..250.0, prop::option::weighted(0.9, -2.0f64..35.0))
        .prop_map(|(lat, lon, day, depth, t)| Obs {
            lat,
            lon,
            day,
            depth,
            temperature: t.map(|t| (t * 100.0).round() / 100.0),
        })
}

fn batch(rows: &[Obs]) -> RecordBatch {
    let schema = Schema::new(vec![
        Field::new("lat", DataType::Float64, false),
        Field::new("lon", DataType::Float64, false),
        Field::new("time", DataType::Timestamp(TimeUnit::Second, None), false),
        Field::new("depth_m", DataType::Float64, false),
        Field::new("temperature_c", DataType::Float64, true),
    ]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lat))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.lon))),
            Arc::new(TimestampSecondArray::from_iter_values(rows.iter().map(|r| r.day * 86_400 + 3_600))),
            Arc::new(Float64Array::from_iter_values(rows.iter().map(|r| r.depth))),
            Arc::new(rows.iter().map(|r| r.temperature).collect::<Float64Array>()),
        ],
    )
    .unwrap()
}

/// The plain computation: (south, west, depth from, month) → (count, Σt, n, histogram).
type Plain = BTreeMap<(i64, i64, i64, String), (i64, f64, i64, [i64; 3])>;

fn plain(rows: &[Obs]) -> Plain {
    let mut out = Plain::new();
    for r in rows {
        let (from, to) = (days_from_civil(2024, 11, 1), days_from_civil(2025, 3, 1));
        if !(30.0..32.0).contains(&r.lat) || !(-20.0..-19.0).contains(&r.lon) || r.depth >= 200.0 {
            continue;
        }
        if r.day < from || r.day >= to {
            continue;
        }
        let (y, m, _) = stayput_mpc_engine::binning::civil_from_days(r.day);
        let key = (
            ((r.lat * 2.0).floor() * 50.0) as i64,
            ((r.lon * 2.0).floor() * 50.0) as i64,
            if r.depth < 50.0 { 0 } else { 50 },
            format!("{y:04}-{m:02}"),
        );
        let e = out.entry(key).or_insert((0, 0.0, 0, [0; 3]));
        e.0 += 1;
        if let Some(t) = r.temperature {
            e.1 += t;
            e.2 += 1;
            e.3[if t < 10.0 {
                0
            } else if t < 20.0 {
                1
            } else {
                2
            }] += 1;
        }
    }
    out
}

fn floats(t: &RecordBatch, name: &str) -> Float64Array {
    t.column_by_name(name).unwrap().as_any().downcast_ref::<Float64Array>().unwrap().clone()
}

fn ints(t: &RecordBatch, name: &str) -> Int64Array {
    t.column_by_name(name).unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn release_equals_the_plain_computation(rows in prop::collection::vec(obs(), 0..400), split in 0usize..400, min in 1u64..6) {
        let query = CohortQuery::from_toml(QUERY).unwrap();
        query.validate(&["lat", "lon", "time", "depth_m", "temperature_c"], &[]).unwrap();
        // Two scans of two parts merge into the scan of the whole.
        let split = split.min(rows.len());
        let mut first = LocalScan::new(&query).unwrap();
        first.absorb(&batch(&rows[..split])).unwrap();
        let mut second = LocalScan::new(&query).unwrap();
        second.absorb(&batch(&rows[split..])).unwrap();
        let mut stats = first.finish();
        stats.merge(second.finish(), &query).unwrap();

        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(0);
        let out = release(&query, &stats, &Disclosure { min_group: min, epsilon: None }, &mut rng).unwrap();
        let expected: Plain = plain(&rows).into_iter().filter(|(_, v)| v.0 >= min as i64).collect();
        prop_assert_eq!(out.groups_released, expected.len());
        prop_assert_eq!(out.groups_released + out.groups_suppressed, 4 * 2 * 2 * 4);
        let t = &out.table;
        let (south, west, depth) = (floats(t, "lat_south"), floats(t, "lon_west"), floats(t, "depth_m_from"));
        let month = t.column_by_name("time_month").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
        let (count, mean) = (ints(t, "count"), floats(t, "mean(temperature_c)"));
        let bins = ["temperature_c < 10", "temperature_c in [10, 20)", "temperature_c >= 20"].map(|b| ints(t, b));
        for (row, (key, (n, sum, present, hist))) in expected.iter().enumerate() {
            let got = ((south.value(row) * 100.0).round() as i64, (west.value(row) * 100.0).round() as i64,
                       depth.value(row) as i64, month.value(row).to_owned());
            prop_assert_eq!(&got, key);
            prop_assert_eq!(count.value(row), *n);
            if *present >= min as i64 {
                prop_assert!((mean.value(row) - sum / *present as f64).abs() < 1e-6);
            } else {
                prop_assert!(mean.is_null(row), "a mean over fewer than the minimum is suppressed");
            }
            for (b, expected) in bins.iter().zip(hist) {
                if *expected >= min as i64 {
                    prop_assert_eq!(b.value(row), *expected);
                } else {
                    prop_assert!(b.is_null(row));
                }
            }
        }
    }
}
