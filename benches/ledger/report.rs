//! The bench's output: one Markdown table (printed and written to a file) in which every throughput
//! figure carries its ratio to pgbench `-N` of the same run, and an SVG chart of end-to-end
//! throughput and p99 latency against clients.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;

/// One line of the table.
struct Row {
    step: String,
    figure: String,
    value: String,
    /// A throughput, to be compared with the reference.
    per_second: Option<f64>,
}

/// The table being filled, step by step.
pub struct Report {
    header: Vec<(String, String)>,
    reference_tps: f64,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(reference_tps: f64) -> Self {
        Self { header: Vec::new(), reference_tps, rows: Vec::new(), notes: Vec::new() }
    }

    /// A line above the table (`machine: 2 cores`).
    pub fn header(&mut self, key: &str, value: impl Into<String>) {
        self.header.push((key.to_owned(), value.into()));
    }

    /// A throughput (`per_second` in `unit`), with `detail` after it.
    pub fn throughput(&mut self, step: &str, figure: &str, per_second: f64, unit: &str, detail: &str) {
        let detail = if detail.is_empty() { String::new() } else { format!(" ({detail})") };
        self.rows.push(Row {
            step: step.to_owned(),
            figure: figure.to_owned(),
            value: format!("{per_second:.1} {unit}{detail}"),
            per_second: Some(per_second),
        });
    }

    /// Any other figure.
    pub fn figure(&mut self, step: &str, figure: &str, value: impl Into<String>) {
        self.rows.push(Row {
            step: step.to_owned(),
            figure: figure.to_owned(),
            value: value.into(),
            per_second: None,
        });
    }

    /// A sentence under the table.
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn markdown(&self) -> String {
        let mut out = String::from("# mpe-ledger benchmark\n\n");
        for (key, value) in &self.header {
            let _ = writeln!(out, "- {key}: {value}");
        }
        let _ = writeln!(out, "- reference: pgbench `-N` at 16 clients = {:.1} tps\n", self.reference_tps);
        out.push_str("| step | figure | value | vs pgbench -N |\n|---|---|---|---|\n");
        // Steps in their order (a step may add rows late: the small-log latency runs before step 2).
        let mut rows: Vec<&Row> = self.rows.iter().collect();
        rows.sort_by_key(|row| match row.step.chars().next() {
            Some(digit @ '0'..='9') => digit.to_digit(10).unwrap_or(0),
            _ if row.step == "setup" => 0,
            _ => 10,
        });
        for row in rows {
            let ratio = match row.per_second {
                Some(value) if self.reference_tps > 0.0 => format!("{:.2}×", value / self.reference_tps),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {ratio} |",
                row.step,
                row.figure,
                row.value.replace('|', "/")
            );
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                let _ = writeln!(out, "- {note}");
            }
        }
        out
    }
}

/// `MPE_LEDGER_BENCH_OUT`, else `target/bench/ledger.md`; the chart goes beside it as `.svg`.
pub fn output_paths() -> (PathBuf, PathBuf) {
    let table = std::env::var_os("MPE_LEDGER_BENCH_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench/ledger.md"));
    let chart = table.with_extension("svg");
    (table, chart)
}

/// Writes `text` to `path`, creating its directory.
pub fn write(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

/// One point of the chart.
#[derive(Debug, Clone, Copy)]
pub struct Point {
    pub clients: usize,
    pub per_second: f64,
    pub p99_ms: f64,
}

/// Two panels: calls/s against clients (paid and direct, log scale: direct is orders of magnitude
/// faster), and paid p99 against clients; the clients axis is logarithmic (base 2).
pub fn chart(path: &Path, paid: &[Point], direct: &[Point]) -> Result<(), Box<dyn std::error::Error>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = SVGBackend::new(path, (1000, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(500);
    let max_clients = paid.iter().chain(direct).map(|p| p.clients).max().unwrap_or(1) as f64;
    let x_range = 0f64..max_clients.log2().max(1.0) + 0.3;
    // One label per power of two.
    let x_labels = max_clients.log2().max(1.0) as usize + 1;
    let x = |p: &Point| (p.clients as f64).log2();
    let clients_label = |v: &f64| format!("{}", 2f64.powf(*v).round());

    let top = paid.iter().chain(direct).map(|p| p.per_second).fold(10.0, f64::max) * 2.0;
    let mut throughput = ChartBuilder::on(&left)
        .caption("end-to-end calls/s", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range.clone(), (1f64..top).log_scale())?;
    throughput
        .configure_mesh()
        .x_desc("clients")
        .y_desc("calls/s (log scale)")
        .x_labels(x_labels)
        .x_label_formatter(&clients_label)
        .draw()?;
    for (points, color, label) in
        [(paid, BLUE, "paid (through mpe-ledger)"), (direct, GREEN, "direct to upstream")]
    {
        if points.is_empty() {
            continue;
        }
        throughput
            .draw_series(LineSeries::new(points.iter().map(|p| (x(p), p.per_second)), color.stroke_width(2)))?
            .label(label)
            .legend(move |(lx, ly)| PathElement::new(vec![(lx, ly), (lx + 20, ly)], color));
        throughput
            .draw_series(points.iter().map(|p| Circle::new((x(p), p.per_second), 3, color.filled())))?;
    }
    throughput.configure_series_labels().background_style(WHITE).border_style(BLACK).draw()?;

    let finite: Vec<&Point> = paid.iter().filter(|p| p.p99_ms.is_finite()).collect();
    let top = finite.iter().map(|p| p.p99_ms).fold(1.0, f64::max) * 1.15;
    let mut latency = ChartBuilder::on(&right)
        .caption("paid call p99 latency (ms)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(x_range, 0f64..top)?;
    latency
        .configure_mesh()
        .x_desc("clients")
        .y_desc("p99 ms")
        .x_labels(x_labels)
        .x_label_formatter(&clients_label)
        .draw()?;
    latency.draw_series(LineSeries::new(finite.iter().map(|p| (x(p), p.p99_ms)), RED.stroke_width(2)))?;
    latency.draw_series(finite.iter().map(|p| Circle::new((x(p), p.p99_ms), 3, RED.filled())))?;
    root.present()?;
    Ok(())
}
