//! Running statistics (count, min, max, sum) of numeric scalar fields, kept while writing,
//! merged over shards or ranks, and stored in JSON with non-finite values as strings.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Running statistics of a numeric scalar field.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Number of present values.
    pub count: u64,
    /// Minimum (NaN ignored; +inf when there are none).
    #[serde(with = "nonfinite")]
    pub min: f64,
    /// Maximum (NaN ignored; -inf when there are none).
    #[serde(with = "nonfinite")]
    pub max: f64,
    /// Sum, for the mean.
    #[serde(with = "nonfinite")]
    pub sum: f64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats { count: 0, min: f64::INFINITY, max: f64::NEG_INFINITY, sum: 0.0 }
    }
}

impl Stats {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        self.count += 1;
        if x < self.min {
            self.min = x;
        }
        if x > self.max {
            self.max = x;
        }
        self.sum += x;
    }

    /// Combines two partial statistics.
    pub fn merge(&mut self, o: &Stats) {
        self.count += o.count;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.sum += o.sum;
    }

    /// Mean of the present values (NaN if none).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }
}

/// JSON has no infinities or NaN: they are stored as strings ("inf", "-inf", "nan").
mod nonfinite {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(x: &f64, s: S) -> Result<S::Ok, S::Error> {
        if x.is_finite() {
            s.serialize_f64(*x)
        } else {
            s.serialize_str(&x.to_string())
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum F {
            N(f64),
            S(String),
            /// What builds before document revision 2 of FORMAT.md wrote for a non-finite
            /// `sum`: its value is lost, so it reads as NaN (an unknown mean).
            Null,
        }
        match F::deserialize(d)? {
            F::N(x) => Ok(x),
            F::S(s) => s.parse().map_err(serde::de::Error::custom),
            F::Null => Ok(f64::NAN),
        }
    }
}

/// Per-field statistics by path.
pub type StatsMap = BTreeMap<String, Stats>;

/// Adds `from`'s statistics into `into` (the merge over shards or ranks).
pub fn merge_stats(into: &mut StatsMap, from: StatsMap) {
    for (k, v) in from {
        into.entry(k).or_default().merge(&v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_stats_round_trip_and_an_old_null_sum_reads_as_nan() {
        let mut st = Stats::default();
        st.add(1.0);
        st.add(f64::INFINITY);
        let json = serde_json::to_string(&st).unwrap();
        assert!(json.contains(r#""sum":"inf""#), "{json}");
        let back: Stats = serde_json::from_str(&json).unwrap();
        assert_eq!((back.count, back.min, back.max, back.sum), (2, 1.0, f64::INFINITY, f64::INFINITY));
        let old: Stats = serde_json::from_str(r#"{"count":1,"min":"inf","max":"inf","sum":null}"#).unwrap();
        assert!(old.sum.is_nan() && old.max == f64::INFINITY);
    }

    #[test]
    fn empty_statistics_survive_json() {
        let st = Stats::default();
        let j = serde_json::to_string(&st).unwrap();
        let back: Stats = serde_json::from_str(&j).unwrap();
        assert_eq!(back.min, f64::INFINITY);
        assert_eq!(back.max, f64::NEG_INFINITY);
    }
}
