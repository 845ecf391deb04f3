//! The markdown table: one row per workload metric, one column per configuration, each cell the
//! median and min–max over repetitions.
use std::fmt::Write as _;

use serde_json::Value;

fn values(config: &Value, key: &str) -> Vec<f64> {
    let mut v: Vec<f64> = config["runs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r[key].as_f64())
        .collect();
    v.sort_by(f64::total_cmp);
    v
}

pub fn median(v: &[f64]) -> Option<f64> {
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn cell(v: &[f64]) -> String {
    match (median(v), v.first(), v.last()) {
        (Some(m), Some(lo), Some(hi)) if v.len() > 1 => {
            format!("{} ({}–{})", num(m), num(*lo), num(*hi))
        }
        (Some(m), _, _) => num(m),
        _ => "–".to_owned(),
    }
}

const METRICS: [(&str, &str); 13] = [
    ("ns_per_cycle", "ns per GIL cycle"),
    ("ns_per_pair", "ns per lock/unlock pair"),
    ("cpu_kloops_per_s", "CPU thread, k-loops/s"),
    ("io_per_s", "I/O thread, sleeps/s"),
    ("requests_per_s", "requests/s"),
    ("p99_ms", "p99 latency, ms"),
    ("attach_ms", "start → probes attached, ms"),
    ("coverage", "coverage (share of time observed)"),
    (
        "estimated_pct",
        "gilwatch's estimate of its cost, % of a CPU",
    ),
    (
        "gilwatch_measured_pct",
        "gilwatch's measurement of its cost, %",
    ),
    ("kernel_memory_mb", "kernel memory of gilwatch's maps, MB"),
    ("trace_records_per_s", "--trace: span records written per s"),
    ("trace_lost", "--trace: records lost (ring buffer full)"),
];

/// The workload's headline number and whether more is better, for the measured cost.
const HEADLINE: [(&str, bool); 4] = [
    ("ns_per_cycle", false),
    ("ns_per_pair", false),
    ("cpu_kloops_per_s", true),
    ("requests_per_s", true),
];

/// What observing took from the target, % of its time, from the medians: 1 − t₀/t for a time
/// per operation, 1 − r/r₀ for a rate. Comparable with gilwatch's estimate (% of a CPU) on a
/// single busy thread.
fn measured_cost_pct(configs: &[&Value]) -> Option<Vec<Option<f64>>> {
    let (key, more_is_better) = HEADLINE
        .into_iter()
        .find(|(k, _)| configs.iter().any(|c| !values(c, k).is_empty()))?;
    let base = median(&values(configs.first()?, key))?;
    Some(
        configs
            .iter()
            .map(|c| {
                median(&values(c, key)).map(|v| {
                    100.0
                        * if more_is_better {
                            1.0 - v / base
                        } else {
                            1.0 - base / v
                        }
                })
            })
            .collect(),
    )
}

pub fn markdown(doc: &Value) -> String {
    let mut s = String::new();
    let m = &doc["machine"];
    let _ = writeln!(
        s,
        "Machine: {} · {} CPUs · kernel {} · {} · CPython {} (pyenv, symbols) · gilwatch {}",
        m["cpu"].as_str().unwrap_or("?"),
        m["cpus"],
        m["kernel"].as_str().unwrap_or("?"),
        m["virtualized"].as_str().unwrap_or("?"),
        doc["python"].as_str().unwrap_or("?"),
        doc["gilwatch_commit"].as_str().unwrap_or("?"),
    );
    let _ = writeln!(
        s,
        "Load average (1/5/15 min) at start: {} · at end: {} · {} repetitions of {} s, interleaved · median (min–max)\n",
        doc["load_average"]["start"].as_str().unwrap_or("?"),
        doc["load_average"]["end"].as_str().unwrap_or("?"),
        doc["repetitions"],
        doc["seconds_per_run"],
    );
    for w in doc["workloads"].as_array().into_iter().flatten() {
        let configs: Vec<&Value> = w["configs"].as_array().into_iter().flatten().collect();
        match w["interpreter"].as_str() {
            Some(i) => {
                let _ = writeln!(s, "**{}** ({i})\n", w["workload"].as_str().unwrap_or("?"));
            }
            None => {
                let _ = writeln!(s, "**{}**\n", w["workload"].as_str().unwrap_or("?"));
            }
        }
        let _ = write!(s, "| |");
        for c in &configs {
            let _ = write!(s, " {} |", c["config"].as_str().unwrap_or("?"));
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "|---|{}", "---|".repeat(configs.len()));
        for (key, label) in METRICS {
            if key == "estimated_pct" {
                if let Some(costs) = measured_cost_pct(&configs) {
                    let _ = write!(s, "| measured cost, % of the target's time |");
                    for c in costs {
                        let _ = write!(s, " {} |", c.map_or("–".to_owned(), num));
                    }
                    let _ = writeln!(s);
                }
            }
            if configs.iter().all(|c| values(c, key).is_empty()) {
                continue;
            }
            let _ = write!(s, "| {label} |");
            for c in &configs {
                let _ = write!(s, " {} |", cell(&values(c, key)));
            }
            let _ = writeln!(s);
            if key == "ns_per_cycle" || key == "ns_per_pair" {
                let base = configs.first().and_then(|c| median(&values(c, key)));
                let what = if key == "ns_per_cycle" {
                    "cycle"
                } else {
                    "pair"
                };
                let _ = write!(s, "| ns added per {what} |");
                for c in &configs {
                    let added = base.zip(median(&values(c, key))).map(|(b, v)| v - b);
                    let _ = write!(s, " {} |", added.map_or("–".to_owned(), num));
                }
                let _ = writeln!(s);
            }
        }
        let _ = writeln!(s);
    }
    let observer = doc["observer"].as_array().filter(|o| !o.is_empty());
    if observer.is_some() {
        let _ = writeln!(
            s,
            "**gilwatch's own cost** (every event observed, live table every 2 s)\n"
        );
        let _ = writeln!(
            s,
            "| case | GIL cycles/s | threads | gilwatch CPU, % of one core | RSS mid-run / end / peak, MB | attach, ms |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for o in doc["observer"].as_array().into_iter().flatten() {
            let mb = |k: &str| {
                o[k].as_f64()
                    .map_or("?".to_owned(), |kb| format!("{:.1}", kb / 1024.0))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} / {} / {} | {} |",
                o["case"].as_str().unwrap_or("?"),
                o["gil_cycles_per_s"].as_f64().map_or("?".to_owned(), num),
                o["threads_seen"],
                o["cpu_pct_of_one_core"]
                    .as_f64()
                    .map_or("?".to_owned(), num),
                mb("rss_kb_mid"),
                mb("rss_kb_end"),
                mb("peak_rss_kb"),
                o["attach_ms"].as_f64().map_or("?".to_owned(), num),
            );
        }
    }
    let _ = writeln!(
        s,
        "\nPer-event streaming mode: {}",
        doc["per_event_streaming_mode"].as_str().unwrap_or("?")
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, 2.0, 9.0]), Some(2.0));
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), Some(3.0));
    }
}
