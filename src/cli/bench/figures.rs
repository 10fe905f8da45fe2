//! The figures of one `ai-cache bench` run, under stable keys, each ratio computed from a
//! figure and its ceiling measured in the same run (the machine's noise cancels out), and
//! the CPU clocks the ceilings are computed from.

use std::collections::BTreeMap;

use serde::Serialize;

/// A figure and the ceiling it is read against.
#[derive(Clone, Copy)]
pub struct Ratio {
    pub name: &'static str,
    pub figure: &'static str,
    pub ceiling: &'static str,
}

/// Every ratio the bench reports (`figure ÷ ceiling`), when both were measured.
pub const RATIOS: &[Ratio] = &[
    Ratio {
        name: "pipeline",
        figure: "pipeline_pages_per_s",
        ceiling: "pipeline_cpu_limit_pages_per_s",
    },
    Ratio {
        name: "event_publish",
        figure: "event_publish_events_per_s",
        ceiling: "publish_ceiling_msgs_per_s",
    },
    Ratio {
        name: "visits",
        figure: "visits_per_s",
        ceiling: "visits_publish_ceiling_msgs_per_s",
    },
    Ratio {
        name: "edge",
        figure: "edge_req_per_s",
        ceiling: "bare_axum_req_per_s",
    },
    Ratio {
        name: "projection_apply",
        figure: "projection_apply_events_per_s",
        ceiling: "publish_ceiling_msgs_per_s",
    },
    Ratio {
        name: "rebuild",
        figure: "rebuild_events_per_s",
        ceiling: "publish_ceiling_msgs_per_s",
    },
    Ratio {
        name: "page_query",
        figure: "page_query_req_per_s",
        ceiling: "bare_point_read_req_per_s",
    },
];

/// The figures of a run by key.
#[derive(Default)]
pub struct Figures {
    values: BTreeMap<&'static str, f64>,
}

/// What `--json` writes.
#[derive(Serialize)]
struct Report<'a> {
    cores: usize,
    measured_at: String,
    version: &'static str,
    figures: &'a BTreeMap<&'static str, f64>,
    ratios: BTreeMap<&'static str, RatioOut>,
}

#[derive(Serialize)]
struct RatioOut {
    figure: &'static str,
    ceiling: &'static str,
    ratio: f64,
}

impl Figures {
    pub fn set(&mut self, key: &'static str, value: f64) {
        self.values.insert(key, value);
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.values.get(key).copied()
    }

    /// `figure ÷ ceiling` for every ratio whose two figures were measured.
    fn ratios(&self) -> BTreeMap<&'static str, RatioOut> {
        RATIOS
            .iter()
            .filter_map(|r| {
                let (figure, ceiling) = (self.get(r.figure)?, self.get(r.ceiling)?);
                (ceiling > 0.0).then(|| {
                    let out = RatioOut {
                        figure: r.figure,
                        ceiling: r.ceiling,
                        ratio: figure / ceiling,
                    };
                    (r.name, out)
                })
            })
            .collect()
    }

    /// The ratios as a table to print at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::from("\nratios (figure ÷ its ceiling, both from this run):\n");
        for (name, r) in self.ratios() {
            out.push_str(&format!(
                "  {name:<18} {:>5.1}%   {} ÷ {}\n",
                100.0 * r.ratio,
                r.figure,
                r.ceiling
            ));
        }
        out
    }

    /// The run as JSON: every figure, and every ratio with the keys it comes from.
    pub fn to_json(&self) -> serde_json::Result<String> {
        serde_json::to_string_pretty(&Report {
            cores: cores(),
            measured_at: chrono::Utc::now().to_rfc3339(),
            version: env!("CARGO_PKG_VERSION"),
            figures: &self.values,
            ratios: self.ratios(),
        })
    }
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// CPU seconds (user + system) this process has used.
pub fn process_cpu_seconds() -> f64 {
    use nix::sys::resource::{UsageWho, getrusage};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

/// CPU seconds every process of the machine has used (busy time of all cores, from
/// `/proc/stat`): with nats-server and PostgreSQL, what a section really costs.
pub fn machine_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let Some(line) = stat.lines().next() else {
        return 0.0;
    };
    // cpu user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait.
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    let busy: f64 = ticks
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    // USER_HZ is 100 on Linux.
    busy / 100.0
}

/// CPU used between two points: this process's and the machine's.
#[derive(Clone, Copy)]
pub struct CpuClock {
    process: f64,
    machine: f64,
}

impl CpuClock {
    pub fn start() -> Self {
        Self {
            process: process_cpu_seconds(),
            machine: machine_cpu_seconds(),
        }
    }

    /// (this process's CPU seconds, the machine's) since `start`.
    pub fn elapsed(&self) -> (f64, f64) {
        (
            process_cpu_seconds() - self.process,
            machine_cpu_seconds() - self.machine,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_need_both_figures_of_the_same_run() {
        let mut figures = Figures::default();
        figures.set("edge_req_per_s", 20.0);
        assert!(figures.ratios().is_empty(), "no ceiling yet");
        figures.set("bare_axum_req_per_s", 80.0);
        let json: serde_json::Value =
            serde_json::from_str(&figures.to_json().expect("json")).expect("parse");
        assert_eq!(json["ratios"]["edge"]["ratio"], 0.25);
        assert_eq!(json["figures"]["bare_axum_req_per_s"], 80.0);
        assert!(figures.summary().contains("25.0%"));
    }
}
