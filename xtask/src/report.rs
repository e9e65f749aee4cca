//! The benchmark report: pairs each `spanflow` function with its peers in the same group and
//! renders docs/BENCHMARKS.md and docs/benchmarks.svg.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::criterion::{Measurement, PackageMap};
use crate::machine::MachineFacts;

/// The function id that is ours in every group; any other id is a peer.
pub(crate) const SPANFLOW: &str = "spanflow";
/// Section for groups no `cargo xtask bench` run has attributed to a package.
const UNATTRIBUTED: &str = "unattributed (not measured through `cargo xtask bench`)";

/// spanflow against one peer on the same question (group and parameter).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Comparison {
    pub(crate) group_id: String,
    pub(crate) value_str: Option<String>,
    pub(crate) peer: String,
    pub(crate) spanflow_ns: f64,
    pub(crate) peer_ns: f64,
    pub(crate) quick: bool,
}

impl Comparison {
    /// peer / spanflow: above 1 means spanflow is faster. `None` when a median is not a
    /// positive finite time, which would make the ratio meaningless.
    pub(crate) fn speedup(&self) -> Option<f64> {
        let valid = |ns: f64| ns.is_finite() && ns > 0.0;
        (valid(self.spanflow_ns) && valid(self.peer_ns)).then(|| self.peer_ns / self.spanflow_ns)
    }

    fn benchmark(&self) -> String {
        benchmark_name(&self.group_id, self.value_str.as_deref())
    }
}

/// A measurement without a spanflow/peer pair, listed as it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Single {
    pub(crate) group_id: String,
    pub(crate) function_id: Option<String>,
    pub(crate) value_str: Option<String>,
    pub(crate) median_ns: f64,
    pub(crate) quick: bool,
}

/// One package's part of the report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Section {
    pub(crate) package: String,
    pub(crate) comparisons: Vec<Comparison>,
    pub(crate) singles: Vec<Single>,
}

/// "group" or "group (value)" for a parameterised benchmark.
fn benchmark_name(group_id: &str, value_str: Option<&str>) -> String {
    match value_str {
        Some(value) => format!("{group_id} ({value})"),
        None => group_id.to_owned(),
    }
}

/// Orders parameters numerically when both are numbers ("64" before "1024"), else as text.
fn compare_values(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.total_cmp(&y).then_with(|| a.cmp(b)),
            _ => a.cmp(b),
        },
        _ => a.cmp(&b),
    }
}

/// Splits the measurements into per-package sections: packages in `member_order` first, in
/// that order, then any other package by name, then the unattributed groups.
pub(crate) fn sections(
    measurements: &[Measurement],
    packages: &PackageMap,
    member_order: &[String],
) -> Vec<Section> {
    // (package, group, parameter) → measurements of that one question.
    let mut questions: BTreeMap<(String, String), Vec<&Measurement>> = BTreeMap::new();
    for m in measurements {
        let package = packages
            .package_of(&m.group_id)
            .map_or_else(|| UNATTRIBUTED.to_owned(), |origin| origin.package.clone());
        questions
            .entry((package, m.group_id.clone()))
            .or_default()
            .push(m);
    }
    let mut by_package: BTreeMap<String, Section> = BTreeMap::new();
    for ((package, group_id), group) in questions {
        let quick = packages
            .package_of(&group_id)
            .is_some_and(|origin| origin.quick);
        let section = by_package
            .entry(package.clone())
            .or_insert_with(|| Section {
                package,
                comparisons: Vec::new(),
                singles: Vec::new(),
            });
        pair_group(&group, quick, section);
    }
    for section in by_package.values_mut() {
        section.comparisons.sort_by(|a, b| {
            a.group_id
                .cmp(&b.group_id)
                .then_with(|| compare_values(a.value_str.as_deref(), b.value_str.as_deref()))
                .then_with(|| a.peer.cmp(&b.peer))
        });
        section.singles.sort_by(|a, b| {
            a.group_id
                .cmp(&b.group_id)
                .then_with(|| compare_values(a.value_str.as_deref(), b.value_str.as_deref()))
                .then_with(|| a.function_id.cmp(&b.function_id))
        });
    }
    let rank = |package: &str| {
        let position = member_order.iter().position(|p| p == package);
        (package == UNATTRIBUTED, position.unwrap_or(usize::MAX))
    };
    let mut sections: Vec<Section> = by_package.into_values().collect();
    // Stable sort: packages outside `member_order` stay in name order.
    sections.sort_by_key(|s| rank(&s.package));
    sections
}

/// Pairs, within one group, the spanflow function with every peer measured at the same
/// parameter; whatever has no partner is listed as a single.
fn pair_group(group: &[&Measurement], quick: bool, section: &mut Section) {
    let mut by_value: BTreeMap<Option<&str>, Vec<&Measurement>> = BTreeMap::new();
    for m in group {
        by_value.entry(m.value_str.as_deref()).or_default().push(m);
    }
    for same_value in by_value.values() {
        let ours = same_value
            .iter()
            .find(|m| m.function_id.as_deref() == Some(SPANFLOW));
        let peers: Vec<&&Measurement> = same_value
            .iter()
            .filter(|m| m.function_id.as_deref().is_some_and(|f| f != SPANFLOW))
            .collect();
        match ours {
            Some(ours) if !peers.is_empty() => {
                for peer in peers {
                    section.comparisons.push(Comparison {
                        group_id: ours.group_id.clone(),
                        value_str: ours.value_str.clone(),
                        peer: peer.function_id.clone().unwrap_or_default(),
                        spanflow_ns: ours.median_ns,
                        peer_ns: peer.median_ns,
                        quick,
                    });
                }
            }
            _ => section.singles.extend(same_value.iter().map(|m| Single {
                group_id: m.group_id.clone(),
                function_id: m.function_id.clone(),
                value_str: m.value_str.clone(),
                median_ns: m.median_ns,
                quick,
            })),
        }
    }
}

/// A time in nanoseconds with three significant digits and a fitting unit.
pub(crate) fn humanize_ns(ns: f64) -> String {
    if !ns.is_finite() || ns < 0.0 {
        return "n/a".to_owned();
    }
    // Thresholds sit at x999.5 so that rounding never prints "1000 ns".
    let (value, unit) = if ns < 999.5 {
        (ns, "ns")
    } else if ns < 999.5e3 {
        (ns / 1e3, "µs")
    } else if ns < 999.5e6 {
        (ns / 1e6, "ms")
    } else {
        (ns / 1e9, "s")
    };
    let decimals = if value < 9.995 {
        2
    } else if value < 99.95 {
        1
    } else {
        0
    };
    format!("{value:.decimals$} {unit}")
}

fn format_speedup(speedup: Option<f64>) -> String {
    speedup.map_or_else(|| "n/a".to_owned(), |s| format!("{s:.2}"))
}

/// A table cell holding a name: code-formatted, with `|` escaped for the table.
fn code_cell(text: &str, quick: bool) -> String {
    let quick = if quick { " *(quick)*" } else { "" };
    format!("`{}`{quick}", text.replace('|', r"\|"))
}

fn text_cell(text: &str) -> String {
    text.replace('|', r"\|")
}

/// Renders docs/BENCHMARKS.md.
pub(crate) fn render_markdown(facts: &MachineFacts, sections: &[Section]) -> String {
    let mut md = String::new();
    // Writing to a String cannot fail, hence the ignored results below.
    let _ = writeln!(
        md,
        "# Benchmarks\n\n\
         <!-- Generated by `cargo xtask bench`; regenerate with `cargo xtask bench-report`. \
         Do not edit by hand. -->\n\n\
         Median time per iteration, from criterion's own estimates \
         (`target/criterion/**/new/estimates.json`).\n\n\
         | machine | |\n|---|---|\n\
         | CPU | {} |\n| cores | {} |\n| date | {} |\n| commit | {} |\n| rustc | {} |\n",
        text_cell(&facts.cpu),
        text_cell(&facts.cores),
        text_cell(&facts.date),
        text_cell(&facts.commit),
        text_cell(&facts.rustc),
    );
    let _ = writeln!(
        md,
        "Naming: each criterion group asks one question and is named `<area>/<question>` \
         (e.g. `deque/push_pop_256`).\n\
         Inside a group, the function `spanflow` is ours; every other function is a peer, named \
         after the crate or approach it uses (e.g. `crossbeam`, `mutex_vec`, `prost`).\n\n\
         Speedup = peer median / spanflow median: **a speedup above 1 means spanflow is \
         faster**.\n"
    );
    let any_quick = sections
        .iter()
        .any(|s| s.comparisons.iter().any(|c| c.quick) || s.singles.iter().any(|s| s.quick));
    if any_quick {
        let _ = writeln!(
            md,
            "Rows marked *(quick)* come from `cargo xtask bench --quick`: short measurements, \
             noisier numbers.\n"
        );
    }
    if sections.is_empty() {
        let _ = writeln!(md, "No criterion results yet: run `cargo xtask bench`.");
    }
    for section in sections {
        let _ = writeln!(md, "## {}\n", section.package);
        if !section.comparisons.is_empty() {
            md.push_str(
                "| benchmark (group) | peer | spanflow median | peer median | speedup (peer/spanflow) |\n\
                 |---|---|--:|--:|--:|\n",
            );
            for c in &section.comparisons {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} |",
                    code_cell(&c.benchmark(), c.quick),
                    text_cell(&c.peer),
                    humanize_ns(c.spanflow_ns),
                    humanize_ns(c.peer_ns),
                    format_speedup(c.speedup()),
                );
            }
            md.push('\n');
        }
        if !section.singles.is_empty() {
            if !section.comparisons.is_empty() {
                md.push_str("Without a spanflow/peer pair:\n\n");
            }
            md.push_str("| benchmark (group) | function | median |\n|---|---|--:|\n");
            for s in &section.singles {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    code_cell(
                        &benchmark_name(&s.group_id, s.value_str.as_deref()),
                        s.quick
                    ),
                    text_cell(s.function_id.as_deref().unwrap_or("-")),
                    humanize_ns(s.median_ns),
                );
            }
            md.push('\n');
        }
    }
    md
}

const FONT: &str = "sans-serif";
const FASTER: RGBColor = RGBColor(46, 160, 67);
const SLOWER: RGBColor = RGBColor(207, 34, 46);

/// Renders docs/benchmarks.svg: one horizontal bar per (group, peer), on a log scale centred
/// on 1.0, so "twice as fast" and "twice as slow" are bars of equal length on either side.
pub(crate) fn render_svg(sections: &[Section]) -> Result<String> {
    let bars: Vec<(String, f64)> = sections
        .iter()
        .flat_map(|s| &s.comparisons)
        .filter_map(|c| Some((format!("{} vs {}", c.benchmark(), c.peer), c.speedup()?)))
        .collect();
    let longest = bars
        .iter()
        .map(|(label, _)| label.chars().count())
        .max()
        .unwrap_or(0);
    // About 7.5 px per character at the labels' size: the SVG backend has no font metrics.
    let label_width = (longest as u32 * 15 / 2 + 24).max(120);
    let rows = bars.len().max(1) as u32;
    let size = (label_width + 720, 120 + 30 * rows);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(plot_error)?;
        if bars.is_empty() {
            root.draw(&Text::new(
                "no benchmark group has both a spanflow and a peer function yet",
                (20, 40),
                (FONT, 16),
            ))
            .map_err(plot_error)?;
        } else {
            draw_bars(&root, &bars, label_width)?;
        }
        root.present().map_err(plot_error)?;
    }
    Ok(svg)
}

fn draw_bars(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    bars: &[(String, f64)],
    label_width: u32,
) -> Result<()> {
    let n = bars.len();
    // The x axis is log2(speedup) on a linear scale: symmetric around 1.0, with ticks at
    // whole powers of two (0.25×, 0.5×, 1×, 2×, 4×), so "twice as fast" and "twice as slow"
    // are bars of equal length on either side of the line at 1.0.
    let widest = bars
        .iter()
        .map(|(_, s)| s.log2().abs())
        .fold(0.0_f64, f64::max);
    let reach = (widest + 0.6).ceil().max(1.0);
    // Row k is drawn at segment n-1-k so that the first row is at the top.
    let row = |k: usize| n - 1 - k;
    let mut chart = ChartBuilder::on(root)
        .caption(
            "spanflow vs peers: speedup = peer median / spanflow median",
            (FONT, 20),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(label_width)
        .build_cartesian_2d(-reach..reach, (0..n - 1).into_segmented())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) if *i < n => bars[row(*i)].0.clone(),
            _ => String::new(),
        })
        .x_labels(2 * reach as usize + 1)
        .x_label_formatter(&|x| format!("{}×", trim_float(2_f64.powf(*x))))
        .x_desc("speedup, log scale (> 1: spanflow faster)")
        .label_style((FONT, 17))
        .axis_desc_style((FONT, 17))
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(k, (_, speedup))| {
            let color = if *speedup >= 1.0 { FASTER } else { SLOWER };
            let x = speedup.log2();
            let mut bar = Rectangle::new(
                [
                    (x.min(0.0), SegmentValue::Exact(row(k))),
                    (x.max(0.0), SegmentValue::Exact(row(k) + 1)),
                ],
                color.filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))
        .map_err(plot_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(k, (_, speedup))| {
            // The value sits just past the bar's outer end: right of green bars, left of red.
            let (offset, anchor) = if *speedup >= 1.0 {
                (6, HPos::Left)
            } else {
                (-6, HPos::Right)
            };
            let style = TextStyle::from((FONT, 16).into_font()).pos(Pos::new(anchor, VPos::Center));
            EmptyElement::at((speedup.log2(), SegmentValue::CenterOf(row(k))))
                + Text::new(format!("{speedup:.2}×"), (offset, 0), style)
        }))
        .map_err(plot_error)?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, SegmentValue::Exact(0)), (0.0, SegmentValue::Last)],
            BLACK.stroke_width(2),
        )))
        .map_err(plot_error)?;
    Ok(())
}

/// 2 → "2", 0.5 → "0.5", 0.25 → "0.25", 1.4142 → "1.41".
fn trim_float(x: f64) -> String {
    let fixed = format!("{x:.2}");
    fixed.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn plot_error<E: std::error::Error + Send + Sync + 'static>(err: E) -> anyhow::Error {
    anyhow::Error::new(err).context("cannot draw the benchmark chart")
}

/// The line after which docs/BENCHMARKS.md is written by hand (measurements that are not
/// criterion groups, such as the Kafka comparison): a regeneration keeps it and what follows.
pub(crate) const HAND_WRITTEN_MARKER: &str =
    "<!-- Hand-written from here on: `cargo xtask bench` keeps this line and everything below. -->";

/// The hand-written tail of an existing report (from [`HAND_WRITTEN_MARKER`] on), if any.
fn hand_written_tail(existing: &str) -> Option<&str> {
    existing.find(HAND_WRITTEN_MARKER).map(|at| &existing[at..])
}

/// Writes both report files into `out_dir`, creating it if needed. The hand-written tail of
/// an existing BENCHMARKS.md is kept.
pub(crate) fn write_report(
    out_dir: &std::path::Path,
    facts: &MachineFacts,
    sections: &[Section],
) -> Result<()> {
    std::fs::create_dir_all(out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let md_path = out_dir.join("BENCHMARKS.md");
    let mut md = render_markdown(facts, sections);
    let existing = std::fs::read_to_string(&md_path).unwrap_or_default();
    if let Some(tail) = hand_written_tail(&existing) {
        md.push('\n');
        md.push_str(tail);
    }
    std::fs::write(&md_path, md).with_context(|| format!("cannot write {}", md_path.display()))?;
    let svg_path = out_dir.join("benchmarks.svg");
    std::fs::write(&svg_path, render_svg(sections)?)
        .with_context(|| format!("cannot write {}", svg_path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::criterion::{Origin, load_measurements};

    #[test]
    fn the_hand_written_tail_is_kept() {
        let dir = crate::test_support::TempDir::new();
        let old = format!("# old tables\n\n{HAND_WRITTEN_MARKER}\n\n## Kafka\n\nby hand\n");
        std::fs::write(dir.path().join("BENCHMARKS.md"), old).unwrap();
        write_report(dir.path(), &facts(), &[]).unwrap();
        let new = std::fs::read_to_string(dir.path().join("BENCHMARKS.md")).unwrap();
        assert!(!new.contains("# old tables"));
        assert!(new.contains("No criterion results yet"));
        assert!(new.ends_with(&format!("{HAND_WRITTEN_MARKER}\n\n## Kafka\n\nby hand\n")));
        assert_eq!(hand_written_tail("no marker"), None);
    }
    use crate::test_support::fixture_criterion_dir;

    fn measurement(
        group: &str,
        function: Option<&str>,
        value: Option<&str>,
        ns: f64,
    ) -> Measurement {
        Measurement {
            group_id: group.to_owned(),
            function_id: function.map(str::to_owned),
            value_str: value.map(str::to_owned),
            median_ns: ns,
        }
    }

    fn facts() -> MachineFacts {
        MachineFacts {
            cores: "2".into(),
            cpu: "Test CPU @ 1 GHz".into(),
            date: "2026-11-25 08:00 UTC".into(),
            commit: "abc1234".into(),
            rustc: "rustc 1.95.0".into(),
        }
    }

    fn fixture_sections() -> Vec<Section> {
        let dir = fixture_criterion_dir();
        let measurements = load_measurements(&dir).unwrap();
        let packages = PackageMap::load(&dir).unwrap();
        let order = ["spanflow-lockfree".to_owned(), "spanflow-batch".to_owned()];
        sections(&measurements, &packages, &order)
    }

    #[test]
    fn humanize_picks_unit_and_three_significant_digits() {
        assert_eq!(humanize_ns(0.0), "0.00 ns");
        assert_eq!(humanize_ns(1.234), "1.23 ns");
        assert_eq!(humanize_ns(12.34), "12.3 ns");
        assert_eq!(humanize_ns(123.4), "123 ns");
        assert_eq!(humanize_ns(999.6), "1.00 µs");
        assert_eq!(humanize_ns(1_234.5), "1.23 µs");
        assert_eq!(humanize_ns(617.25), "617 ns");
        assert_eq!(humanize_ns(45_600.0), "45.6 µs");
        assert_eq!(humanize_ns(1_600_000.0), "1.60 ms");
        assert_eq!(humanize_ns(2.5e9), "2.50 s");
        assert_eq!(humanize_ns(f64::NAN), "n/a");
        assert_eq!(humanize_ns(-1.0), "n/a");
    }

    #[test]
    fn spanflow_pairs_with_every_peer_at_the_same_parameter() {
        let measurements = [
            measurement("q/a", Some("spanflow"), Some("8"), 100.0),
            measurement("q/a", Some("peer1"), Some("8"), 200.0),
            measurement("q/a", Some("peer2"), Some("8"), 50.0),
            measurement("q/a", Some("spanflow"), Some("16"), 400.0),
            measurement("q/a", Some("peer1"), Some("16"), 600.0),
            // No spanflow at this parameter: listed as it is.
            measurement("q/a", Some("peer1"), Some("32"), 900.0),
        ];
        let sections = sections(&measurements, &PackageMap::default(), &[]);
        assert_eq!(sections.len(), 1);
        let pairs: Vec<(Option<&str>, &str, Option<f64>)> = sections[0]
            .comparisons
            .iter()
            .map(|c| (c.value_str.as_deref(), c.peer.as_str(), c.speedup()))
            .collect();
        assert_eq!(
            pairs,
            [
                (Some("8"), "peer1", Some(2.0)),
                (Some("8"), "peer2", Some(0.5)),
                (Some("16"), "peer1", Some(1.5)),
            ]
        );
        let singles: Vec<(Option<&str>, Option<&str>)> = sections[0]
            .singles
            .iter()
            .map(|s| (s.function_id.as_deref(), s.value_str.as_deref()))
            .collect();
        assert_eq!(singles, [(Some("peer1"), Some("32"))]);
    }

    #[test]
    fn groups_without_spanflow_or_without_peers_are_listed_as_is() {
        let measurements = [
            measurement("alone/ours", Some("spanflow"), None, 10.0),
            measurement("alone/theirs", Some("prost"), None, 20.0),
            measurement("plain", None, None, 30.0),
        ];
        let sections = sections(&measurements, &PackageMap::default(), &[]);
        assert!(sections[0].comparisons.is_empty());
        let groups: Vec<&str> = sections[0]
            .singles
            .iter()
            .map(|s| s.group_id.as_str())
            .collect();
        assert_eq!(groups, ["alone/ours", "alone/theirs", "plain"]);
    }

    #[test]
    fn zero_median_has_no_speedup() {
        let c = Comparison {
            group_id: "g".into(),
            value_str: None,
            peer: "p".into(),
            spanflow_ns: 0.0,
            peer_ns: 5.0,
            quick: false,
        };
        assert_eq!(c.speedup(), None);
    }

    #[test]
    fn sections_follow_member_order_then_names_then_unattributed() {
        let mut packages = PackageMap::default();
        for (group, package) in [
            ("a/x", "zeta"),
            ("b/x", "alpha"),
            ("c/x", "spanflow-lockfree"),
        ] {
            let origin = Origin {
                package: package.into(),
                bench: "b".into(),
                quick: false,
            };
            packages.groups.insert(group.into(), origin);
        }
        let measurements = ["a/x", "b/x", "c/x", "d/x"]
            .map(|group| measurement(group, Some("spanflow"), None, 1.0));
        let order = ["spanflow-lockfree".to_owned()];
        let names: Vec<String> = sections(&measurements, &packages, &order)
            .into_iter()
            .map(|s| s.package)
            .collect();
        assert_eq!(names, ["spanflow-lockfree", "alpha", "zeta", UNATTRIBUTED]);
    }

    #[test]
    fn markdown_has_facts_convention_and_a_table_per_package() {
        let md = render_markdown(&facts(), &fixture_sections());
        for expected in [
            "| CPU | Test CPU @ 1 GHz |",
            "| cores | 2 |",
            "| commit | abc1234 |",
            "| rustc | rustc 1.95.0 |",
            "| date | 2026-11-25 08:00 UTC |",
            "named `<area>/<question>`",
            "the function `spanflow` is ours",
            "a speedup above 1 means spanflow is faster",
            "| benchmark (group) | peer | spanflow median | peer median | speedup (peer/spanflow) |",
            "| `deque/push_pop_256` | crossbeam | 1.23 µs | 2.47 µs | 2.00 |",
            "| `deque/push_pop_256` | mutex_vec | 1.23 µs | 617 ns | 0.50 |",
            "| `batch/flush_by_count (64)` *(quick)* | crossbeam_channel | 50.0 µs | 75.0 µs | 1.50 |",
            "| `batch/flush_by_count (64)` *(quick)* | sync_channel | 50.0 µs | 40.0 µs | 0.80 |",
            "| `batch/flush_by_count (1024)` *(quick)* | crossbeam_channel | 800 µs | 1.60 ms | 2.00 |",
            "| `otlp/encode_span` | prost | 3.40 µs |",
        ] {
            assert!(md.contains(expected), "missing {expected:?} in:\n{md}");
        }
        let position = |needle: &str| md.find(needle).unwrap();
        assert!(position("## spanflow-lockfree") < position("## spanflow-batch"));
        assert!(position("## spanflow-batch") < position("## unattributed"));
        // 64 before 1024: parameters sort as numbers.
        assert!(position("(64)` *(quick)* | sync") < position("(1024)"));
    }

    #[test]
    fn markdown_escapes_pipes_in_names() {
        let measurements = [
            measurement("odd|group", Some("spanflow"), None, 1.0),
            measurement("odd|group", Some("a|b"), None, 2.0),
        ];
        let md = render_markdown(
            &facts(),
            &sections(&measurements, &PackageMap::default(), &[]),
        );
        assert!(
            md.contains(r"| `odd\|group` | a\|b | 1.00 ns | 2.00 ns | 2.00 |"),
            "{md}"
        );
    }

    #[test]
    fn empty_report_says_how_to_fill_it() {
        let md = render_markdown(&facts(), &[]);
        assert!(md.contains("No criterion results yet"));
        let svg = render_svg(&[]).unwrap();
        assert!(svg.contains("no benchmark group has both a spanflow and a peer function yet"));
    }

    #[test]
    fn svg_has_a_bar_and_a_label_per_pair() {
        let svg = render_svg(&fixture_sections()).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        for label in [
            "deque/push_pop_256 vs crossbeam",
            "deque/push_pop_256 vs mutex_vec",
            "batch/flush_by_count (64) vs sync_channel",
            "batch/flush_by_count (1024) vs crossbeam_channel",
            "2.00×",
            "0.50×",
            "0.5×", // an axis tick below 1
        ] {
            assert!(svg.contains(label), "missing {label:?}");
        }
        let bars =
            svg.matches(r##"fill="#2EA043""##).count() + svg.matches(r##"fill="#CF222E""##).count();
        assert_eq!(bars, 5);
        // The unpaired group is in the table, not on the chart.
        assert!(!svg.contains("otlp/encode_span"));
    }

    #[test]
    fn trim_float_drops_useless_zeros() {
        assert_eq!(trim_float(2.0), "2");
        assert_eq!(trim_float(0.5), "0.5");
        assert_eq!(trim_float(0.25), "0.25");
        assert_eq!(trim_float(std::f64::consts::SQRT_2), "1.41");
    }
}
