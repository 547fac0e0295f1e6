//! Binned group-by keys for observational data: latitude/longitude grid
//! cells, bands of a numeric column (depth bands), and time windows of a
//! timestamp column (day, month, meteorological season, year, and their
//! climatological cycles).
//!
//! ```toml
//! [[bins]]
//! kind = "grid"
//! lat = "lat"
//! lon = "lon"
//! cell_degrees = 1.0
//! lat_range = [18, 40]        # the region: south ≤ lat < north
//! lon_range = [110, 130]      #             west ≤ lon < east
//!
//! [[bins]]
//! kind = "bands"
//! column = "depth_m"
//! edges = [0, 10, 50, 200]    # [0, 10), [10, 50), [50, 200)
//!
//! [[bins]]
//! kind = "time"
//! column = "time"
//! window = "month"            # day | month | season | year | month_of_year | season_of_year
//! from = "2025-01-01"         # first day in
//! to = "2026-01-01"           # first day out
//! ```
//!
//! **A bin is also a filter**: a row outside the region, outside the
//! bands' edges or outside `[from, to)` — or with a missing value in a
//! binned column — belongs to no group and is counted nowhere, exactly as
//! a row the cohort filter excludes.
//!
//! **Groups.** Keys combine as a mixed-radix number: the `group_by` value
//! first (when there is one), then each bin in the order written, the last
//! varying fastest. Every party computes the same layout from the query
//! alone, so the keys of a group are public and never reveal a row.
//!
//! **Time.** A timestamp column may be an arrow timestamp (any unit, read
//! as UTC), a date, or ISO 8601 text (`2025-03-14T06:00:00Z`). Seasons are
//! meteorological (DJF, MAM, JJA, SON); December belongs to the next
//! year's DJF, so `2025-DJF` is December 2024 to February 2025.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Int64Array, StringArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::MpcError;

/// Most keys one bin may have.
pub const MAX_KEYS_PER_BIN: usize = 100_000;

/// Group index of a row in no group.
pub const NO_GROUP: u32 = u32::MAX;

/// A time window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    /// Calendar days (UTC).
    Day,
    /// Calendar months.
    Month,
    /// Meteorological seasons of each year (`2025-DJF`).
    Season,
    /// Calendar years.
    Year,
    /// The month of the year, across years (a monthly climatology).
    MonthOfYear,
    /// The season, across years.
    SeasonOfYear,
}

/// A binned group-by key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Bin {
    /// Square latitude/longitude cells within a region.
    Grid {
        /// Latitude column (degrees north).
        lat: String,
        /// Longitude column (degrees east).
        lon: String,
        /// Cell side in degrees.
        cell_degrees: f64,
        /// `[south, north)` of the region.
        lat_range: [f64; 2],
        /// `[west, east)` of the region.
        lon_range: [f64; 2],
    },
    /// Bands `[edges[i], edges[i+1])` of a numeric column.
    Bands {
        /// The column.
        column: String,
        /// Strictly increasing band edges.
        edges: Vec<f64>,
    },
    /// Time windows of a timestamp column.
    Time {
        /// The column.
        column: String,
        /// The window.
        window: Window,
        /// First day in (`YYYY-MM-DD`); required for calendar windows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        from: Option<String>,
        /// First day out (`YYYY-MM-DD`); required for calendar windows.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
}

/// A time bin's range, see [`Bin::time_range`].
struct TimeRange {
    from_day: i64,
    to_day: i64,
    first: i64,
    last: Option<i64>,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the
/// era-based day-count method: 400-year eras of 146,097 days, years
/// starting in March so the leap day falls last).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let shifted_month = i64::from((month + 9) % 12);
    let day_of_year = (153 * shifted_month + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day count (inverse of [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (year, month as u32, day as u32)
}

fn parse_date(text: &str, what: &str) -> Result<i64, MpcError> {
    let bad = || MpcError::Query(format!("'{what}' must be a date written YYYY-MM-DD, not '{text}'"));
    let mut parts = text.split('-');
    let (Some(y), Some(m), Some(d), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(bad());
    };
    let (y, m, d): (i64, u32, u32) =
        (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?, d.parse().map_err(|_| bad())?);
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 {
        return Err(bad());
    }
    let days = days_from_civil(y, m, d);
    if civil_from_days(days) != (y, m, d) {
        return Err(bad());
    }
    Ok(days)
}

/// Month serial (year·12 + month − 1) of a day count.
fn month_serial(days: i64) -> i64 {
    let (y, m, _) = civil_from_days(days);
    y * 12 + i64::from(m) - 1
}

/// Season serial (year·4 + season, DJF = 0) of a day count; December
/// counts toward the next year.
fn season_serial(days: i64) -> i64 {
    (month_serial(days) + 1).div_euclid(3)
}

const SEASONS: [&str; 4] = ["DJF", "MAM", "JJA", "SON"];

/// A time bin's serial window index for a day count.
fn window_serial(window: Window, days: i64) -> i64 {
    match window {
        Window::Day => days,
        Window::Month => month_serial(days),
        Window::Season => season_serial(days),
        Window::Year => civil_from_days(days).0,
        Window::MonthOfYear => month_serial(days).rem_euclid(12),
        Window::SeasonOfYear => season_serial(days).rem_euclid(4),
    }
}

/// Number of grid steps covering `[low, high)`.
fn steps(low: f64, high: f64, cell: f64) -> usize {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let n = ((high - low) / cell - 1e-9).ceil().max(1.0) as usize;
    n
}

impl Bin {
    /// The columns it reads.
    pub fn columns(&self) -> Vec<&str> {
        match self {
            Bin::Grid { lat, lon, .. } => vec![lat, lon],
            Bin::Bands { column, .. } | Bin::Time { column, .. } => vec![column],
        }
    }

    /// A time bin's days `[from, to)` and its first and last window
    /// serials (the cycles start at 0 and have no last); `None` for the
    /// other bins.
    fn time_range(&self) -> Result<Option<TimeRange>, MpcError> {
        let Bin::Time { window, from, to, column } = self else { return Ok(None) };
        let from = from.as_deref().map(|f| parse_date(f, "from")).transpose()?;
        let to = to.as_deref().map(|t| parse_date(t, "to")).transpose()?;
        if let (Some(f), Some(t)) = (from, to)
            && f >= t
        {
            return Err(MpcError::Query(format!("the time window of '{column}' needs from < to")));
        }
        let (from_day, to_day) = (from.unwrap_or(i64::MIN / 4), to.unwrap_or(i64::MAX / 4));
        let (first, last) = match window {
            Window::MonthOfYear | Window::SeasonOfYear => (0, None),
            _ => {
                let (Some(f), Some(t)) = (from, to) else {
                    return Err(MpcError::Query(format!(
                        "a {window:?} window on '{column}' needs from and to (YYYY-MM-DD)",
                    )));
                };
                (window_serial(*window, f), Some(window_serial(*window, t - 1)))
            }
        };
        Ok(Some(TimeRange { from_day, to_day, first, last }))
    }

    /// How many keys it has.
    pub fn keys(&self) -> Result<usize, MpcError> {
        let count = match self {
            Bin::Grid { cell_degrees, lat_range, lon_range, .. } => steps(lat_range[0], lat_range[1], *cell_degrees)
                .saturating_mul(steps(lon_range[0], lon_range[1], *cell_degrees)),
            Bin::Bands { edges, .. } => edges.len().saturating_sub(1),
            Bin::Time { window: Window::MonthOfYear, .. } => 12,
            Bin::Time { window: Window::SeasonOfYear, .. } => 4,
            Bin::Time { .. } => {
                let range = self.time_range()?.expect("a time bin");
                range.last.map_or(0, |last| usize::try_from(last - range.first + 1).unwrap_or(usize::MAX))
            }
        };
        Ok(count)
    }

    /// Checks its shape (run by the query's validation).
    pub fn validate(&self) -> Result<(), MpcError> {
        match self {
            Bin::Grid { cell_degrees, lat_range, lon_range, lat, lon } => {
                let ok = |r: &[f64; 2], lo: f64, hi: f64| lo <= r[0] && r[0] < r[1] && r[1] <= hi;
                if !(cell_degrees.is_finite() && *cell_degrees >= 0.001) {
                    return Err(MpcError::Query(format!(
                        "the grid on '{lat}'/'{lon}' needs cell_degrees of at least 0.001"
                    )));
                }
                if !ok(lat_range, -90.0, 90.0) || !ok(lon_range, -180.0, 360.0) {
                    return Err(MpcError::Query(format!(
                        "the grid region needs south < north within [-90, 90] and west < east within [-180, 360] (columns '{lat}', '{lon}')"
                    )));
                }
            }
            Bin::Bands { column, edges } => {
                if edges.len() < 2 || !edges.windows(2).all(|w| w[0] < w[1]) || edges.iter().any(|e| !e.is_finite()) {
                    return Err(MpcError::Query(format!(
                        "the bands of '{column}' need at least 2 finite, strictly increasing edges"
                    )));
                }
            }
            Bin::Time { .. } => {
                self.time_range()?;
            }
        }
        let keys = self.keys()?;
        if keys > MAX_KEYS_PER_BIN {
            return Err(MpcError::Query(format!(
                "a bin on '{}' would have {keys} keys; at most {MAX_KEYS_PER_BIN} — use a coarser cell, band or window",
                self.columns().join("', '")
            )));
        }
        Ok(())
    }

    /// Names of the table columns that label its keys.
    pub fn label_names(&self) -> Vec<String> {
        match self {
            Bin::Grid { lat, lon, .. } => vec![format!("{lat}_south"), format!("{lon}_west")],
            Bin::Bands { column, .. } => vec![format!("{column}_from"), format!("{column}_to")],
            Bin::Time { column, window, .. } => vec![format!("{column}_{}", window_name(*window))],
        }
    }

    /// The labels of key `k` (as many as [`Bin::label_names`]).
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // rem_euclid(4) is 0..4
    pub fn label(&self, k: usize) -> Vec<Label> {
        match self {
            Bin::Grid { cell_degrees, lat_range, lon_range, .. } => {
                let columns = steps(lon_range[0], lon_range[1], *cell_degrees);
                vec![
                    Label::Number(lat_range[0] + (k / columns) as f64 * cell_degrees),
                    Label::Number(lon_range[0] + (k % columns) as f64 * cell_degrees),
                ]
            }
            Bin::Bands { edges, .. } => vec![Label::Number(edges[k]), Label::Number(edges[k + 1])],
            Bin::Time { window, .. } => {
                let first = self.time_range().ok().flatten().map_or(0, |r| r.first);
                let serial = first + k as i64;
                vec![Label::Text(match window {
                    Window::Day => {
                        let (y, m, d) = civil_from_days(serial);
                        format!("{y:04}-{m:02}-{d:02}")
                    }
                    Window::Month => format!("{:04}-{:02}", serial.div_euclid(12), serial.rem_euclid(12) + 1),
                    Window::Season => {
                        format!("{:04}-{}", serial.div_euclid(4), SEASONS[serial.rem_euclid(4) as usize])
                    }
                    Window::Year => format!("{serial:04}"),
                    Window::MonthOfYear => format!("{:02}", k + 1),
                    Window::SeasonOfYear => SEASONS[k].to_owned(),
                })]
            }
        }
    }

    /// Folds this bin's key into every row's group index: `group = group ·
    /// keys + key`, or [`NO_GROUP`] for a row outside the bin.
    // Key counts are at most MAX_KEYS_PER_BIN (validated), so they fit u32.
    #[allow(clippy::cast_possible_truncation)]
    pub fn assign(&self, batch: &RecordBatch, groups: &mut [u32], keys: u32) -> Result<(), MpcError> {
        let fold = |groups: &mut [u32], key_of: &dyn Fn(usize) -> Option<u32>| {
            for (r, g) in groups.iter_mut().enumerate() {
                if *g != NO_GROUP {
                    *g = match key_of(r) {
                        Some(k) => *g * keys + k,
                        None => NO_GROUP,
                    };
                }
            }
        };
        match self {
            Bin::Grid { lat, lon, cell_degrees, lat_range, lon_range } => {
                let (lats, lons) = (crate::local::numeric(batch, lat)?, crate::local::numeric(batch, lon)?);
                let (rows, columns) = (
                    steps(lat_range[0], lat_range[1], *cell_degrees) as u32,
                    steps(lon_range[0], lon_range[1], *cell_degrees) as u32,
                );
                let step = |v: f64, range: &[f64; 2], n: u32| -> Option<u32> {
                    if !(range[0] <= v && v < range[1]) {
                        return None;
                    }
                    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                    let k = ((v - range[0]) / cell_degrees) as u32;
                    Some(k.min(n - 1))
                };
                fold(groups, &|r| {
                    if lats.is_null(r) || lons.is_null(r) {
                        return None;
                    }
                    let y = step(lats.value(r), lat_range, rows)?;
                    let x = step(lons.value(r), lon_range, columns)?;
                    Some(y * columns + x)
                });
            }
            Bin::Bands { column, edges } => {
                let values = crate::local::numeric(batch, column)?;
                fold(groups, &|r| {
                    if values.is_null(r) {
                        return None;
                    }
                    let v = values.value(r);
                    if !(edges[0] <= v && v < edges[edges.len() - 1]) {
                        return None;
                    }
                    Some(edges.partition_point(|e| *e <= v) as u32 - 1)
                });
            }
            Bin::Time { column, window, .. } => {
                let seconds = timestamps(batch, column)?;
                let TimeRange { from_day, to_day, first, .. } = self.time_range()?.expect("a time bin");
                fold(groups, &|r| {
                    if seconds.is_null(r) {
                        return None;
                    }
                    let day = seconds.value(r).div_euclid(86_400);
                    if day < from_day || day >= to_day {
                        return None;
                    }
                    u32::try_from(window_serial(*window, day) - first).ok()
                });
            }
        }
        Ok(())
    }
}

fn window_name(window: Window) -> &'static str {
    match window {
        Window::Day => "day",
        Window::Month => "month",
        Window::Season => "season",
        Window::Year => "year",
        Window::MonthOfYear => "month_of_year",
        Window::SeasonOfYear => "season_of_year",
    }
}

/// A key's label in a result table.
#[derive(Debug, Clone, PartialEq)]
pub enum Label {
    /// A number (a cell's corner, a band's edge).
    Number(f64),
    /// Text (a group value, a time window).
    Text(String),
}

/// A column as seconds since the epoch (UTC), from an arrow timestamp, a
/// date or ISO 8601 text; text that does not parse is an error (how many,
/// never which).
fn timestamps(batch: &RecordBatch, name: &str) -> Result<Int64Array, MpcError> {
    let source = crate::local::column(batch, name)?;
    let arrow_err = |e: arrow::error::ArrowError| MpcError::Arrow(format!("column '{name}': {e}"));
    let source: ArrayRef = match source.data_type() {
        DataType::Utf8 => {
            let text = source.as_any().downcast_ref::<StringArray>().expect("utf8");
            Arc::new(text.iter().map(|v| v.map(str::trim).filter(|s| !s.is_empty())).collect::<StringArray>())
        }
        DataType::Timestamp(_, _) | DataType::Date32 | DataType::Date64 | DataType::LargeUtf8 | DataType::Utf8View => {
            source.clone()
        }
        other => {
            return Err(MpcError::Query(format!(
                "column '{name}' is {other}, not a timestamp, a date or ISO 8601 text"
            )));
        }
    };
    let as_time = cast_with_options(
        &source,
        &DataType::Timestamp(TimeUnit::Second, None),
        &CastOptions { safe: true, ..Default::default() },
    )
    .map_err(arrow_err)?;
    let bad = as_time.null_count().saturating_sub(source.null_count());
    if bad > 0 {
        return Err(MpcError::NotNumeric { column: name.into(), count: bad });
    }
    let seconds = cast_with_options(&as_time, &DataType::Int64, &CastOptions::default()).map_err(arrow_err)?;
    Ok(seconds.as_any().downcast_ref::<Int64Array>().expect("int64").clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Field, Schema};

    #[test]
    fn dates_round_trip_and_known_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
        for d in (-800_000..800_000).step_by(97) {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
        assert!(parse_date("2025-02-29", "from").is_err());
        assert!(parse_date("2025-13-01", "from").is_err());
        assert!(parse_date("yesterday", "from").is_err());
    }

    #[test]
    fn seasons_put_december_in_the_next_winter() {
        let winter = |y, m| season_serial(days_from_civil(y, m, 15));
        assert_eq!(winter(2024, 12), winter(2025, 1));
        assert_eq!(winter(2025, 2), 2025 * 4);
        assert_eq!(winter(2025, 3), 2025 * 4 + 1);
        assert_eq!(winter(2025, 11), 2025 * 4 + 3);
    }

    fn batch() -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("lat", DataType::Float64, true),
            Field::new("lon", DataType::Float64, true),
            Field::new("time", DataType::Utf8, true),
        ]);
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(arrow::array::Float64Array::from(vec![Some(18.2), Some(19.9), Some(40.0), None])),
                Arc::new(arrow::array::Float64Array::from(vec![Some(110.5), Some(112.0), Some(111.0), Some(111.0)])),
                Arc::new(StringArray::from(vec![
                    Some("2025-01-31T23:59:59Z"),
                    Some("2025-12-01T00:00:00Z"),
                    Some("2025-06-01T00:00:00Z"),
                    Some("2025-06-01T00:00:00Z"),
                ])),
            ],
        )
        .unwrap()
    }

    #[test]
    fn grid_and_month_keys_fold_into_groups() {
        let grid = Bin::Grid {
            lat: "lat".into(),
            lon: "lon".into(),
            cell_degrees: 1.0,
            lat_range: [18.0, 40.0],
            lon_range: [110.0, 130.0],
        };
        let month = Bin::Time {
            column: "time".into(),
            window: Window::Month,
            from: Some("2025-01-01".into()),
            to: Some("2026-01-01".into()),
        };
        grid.validate().unwrap();
        month.validate().unwrap();
        assert_eq!((grid.keys().unwrap(), month.keys().unwrap()), (22 * 20, 12));
        let mut groups = vec![0u32; 4];
        grid.assign(&batch(), &mut groups, 440).unwrap();
        // (18.2, 110.5) → row 0, column 0; (19.9, 112.0) → row 1, column 2;
        // lat 40 is outside [18, 40); a missing lat is in no group.
        assert_eq!(groups, [0, 22, NO_GROUP, NO_GROUP]);
        month.assign(&batch(), &mut groups, 12).unwrap();
        assert_eq!(groups, [0, 22 * 12 + 11, NO_GROUP, NO_GROUP]);
        assert_eq!(grid.label(22), [Label::Number(19.0), Label::Number(112.0)]);
        assert_eq!(month.label(11), [Label::Text("2025-12".into())]);
    }

    #[test]
    fn bad_bins_are_refused_with_what_to_change() {
        let fine = Bin::Grid {
            lat: "lat".into(),
            lon: "lon".into(),
            cell_degrees: 0.01,
            lat_range: [-90.0, 90.0],
            lon_range: [-180.0, 180.0],
        };
        assert!(fine.validate().unwrap_err().to_string().contains("coarser"));
        let open = Bin::Time { column: "time".into(), window: Window::Day, from: None, to: None };
        assert!(open.validate().unwrap_err().to_string().contains("needs from and to"));
        let bands = Bin::Bands { column: "depth_m".into(), edges: vec![10.0, 5.0] };
        assert!(bands.validate().is_err());
        let cycle = Bin::Time { column: "time".into(), window: Window::SeasonOfYear, from: None, to: None };
        assert_eq!(cycle.keys().unwrap(), 4);
        assert_eq!(cycle.label(0), [Label::Text("DJF".into())]);
    }
}
