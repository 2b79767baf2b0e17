//! Fig. 6a and 6b of the paper: `R_trace` over a sweep of corrupted servers with 1000
//! users, 10 entry and 5 exchange servers, beside the sound metrics; written as a
//! Markdown table (stdout), JSON, CSV and an SVG plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use super::designs::paper_shares_p_trace;
use super::metrics::{degree_of_anonymity, expected_traced_fraction};
use super::paper::{count_entropy, p_trace, r_trace};
use super::{LogBase, ParamError, Params};

/// The figures `--figure` reproduces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Figure {
    /// `R_trace` against corrupted entry servers (1..10), one line per corrupted exchange
    /// servers (1..5).
    #[value(name = "6a")]
    Fig6a,
    /// `R_trace` against corrupted exchange servers (1..5), one line per corrupted entry
    /// servers (2, 4, 6, 8, 10).
    #[value(name = "6b")]
    Fig6b,
}

/// The paper's Fig. 6 configuration (§6, §6.2).
pub const FIG6_USERS: u64 = 1000;
pub const FIG6_ENTRIES: u64 = 10;
pub const FIG6_EXCHANGES: u64 = 5;

/// One point of a figure.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Point {
    pub corrupt_entries: u64,
    pub corrupt_exchanges: u64,
    pub p_trace: f64,
    pub r_trace: f64,
    pub count_entropy: f64,
    pub expected_traced_fraction: f64,
    pub degree_of_anonymity: Option<f64>,
    pub paper_shares_p_trace: f64,
}

/// A whole figure's data.
#[derive(Clone, Debug, Serialize)]
pub struct FigureData {
    pub figure: String,
    pub users: u64,
    pub entries: u64,
    pub exchanges: u64,
    pub shares: u64,
    pub log_base: serde_json::Value,
    /// Which parameter is on the x axis: "corrupt_entries" or "corrupt_exchanges".
    pub x: &'static str,
    /// Which parameter each line fixes.
    pub series: &'static str,
    pub xs: Vec<u64>,
    pub series_values: Vec<u64>,
    /// Row-major: for each series value, for each x.
    pub points: Vec<Point>,
}

impl Figure {
    fn name(self) -> &'static str {
        match self {
            Figure::Fig6a => "6a",
            Figure::Fig6b => "6b",
        }
    }

    /// Computes the figure for the system `base` (its corruption counts are ignored).
    pub fn compute(self, base: Params, log: LogBase) -> Result<FigureData, ParamError> {
        let (x, series, xs, series_values): (_, _, Vec<u64>, Vec<u64>) = match self {
            Figure::Fig6a => (
                "corrupt_entries",
                "corrupt_exchanges",
                (1..=10).collect(),
                (1..=5).collect(),
            ),
            Figure::Fig6b => (
                "corrupt_exchanges",
                "corrupt_entries",
                (1..=5).collect(),
                vec![2, 4, 6, 8, 10],
            ),
        };
        let mut points = Vec::with_capacity(xs.len() * series_values.len());
        for &s in &series_values {
            for &xv in &xs {
                let (ce, cx) = if x == "corrupt_entries" {
                    (xv, s)
                } else {
                    (s, xv)
                };
                let params = base.with_corruption(ce, cx)?;
                let p = p_trace(&params);
                points.push(Point {
                    corrupt_entries: ce,
                    corrupt_exchanges: cx,
                    p_trace: p,
                    r_trace: r_trace(params.users, p, log),
                    count_entropy: count_entropy(params.users, p, log),
                    expected_traced_fraction: expected_traced_fraction(p),
                    degree_of_anonymity: degree_of_anonymity(params.users, p),
                    paper_shares_p_trace: paper_shares_p_trace(&params),
                });
            }
        }
        Ok(FigureData {
            figure: self.name().to_string(),
            users: base.users,
            entries: base.entries,
            exchanges: base.exchanges,
            shares: base.shares,
            log_base: log.json(),
            x,
            series,
            xs,
            series_values,
            points,
        })
    }
}

fn short(param: &str) -> &'static str {
    if param == "corrupt_entries" {
        "CE"
    } else {
        "CX"
    }
}

impl FigureData {
    fn point(&self, series_index: usize, x_index: usize) -> &Point {
        &self.points[series_index * self.xs.len() + x_index]
    }

    /// One Markdown table of `metric` (rows: x; columns: series).
    fn table(&self, title: &str, metric: impl Fn(&Point) -> String) -> String {
        let (xn, sn) = (short(self.x), short(self.series));
        let mut s = format!("{title}\n\n| {xn} |");
        for v in &self.series_values {
            let _ = write!(s, " {sn}={v} |");
        }
        s.push_str("\n|---:|");
        s.push_str(&"---:|".repeat(self.series_values.len()));
        s.push('\n');
        for (xi, xv) in self.xs.iter().enumerate() {
            let _ = write!(s, "| {xv} |");
            for si in 0..self.series_values.len() {
                let _ = write!(s, " {} |", metric(self.point(si, xi)));
            }
            s.push('\n');
        }
        s
    }

    /// The tables printed on stdout: R_trace, P_trace, degree of anonymity, and the paper's
    /// design with `n_m` shares.
    pub fn to_markdown(&self) -> String {
        let unit = if self.log_base == serde_json::json!(2) {
            "bits"
        } else {
            "nats"
        };
        let head = format!(
            "Fig. {}: {} users, {} entry servers, {} exchange servers ({} shares for the last table)\n\n",
            self.figure, self.users, self.entries, self.exchanges, self.shares
        );
        [
            head,
            self.table(&format!("R_trace (Eq. 6), {unit}:"), |p| {
                format!("{:.4}", p.r_trace)
            }),
            self.table(
                "P_trace (Eq. 4) = expected fraction of traced users:",
                |p| format!("{:.4}", p.p_trace),
            ),
            self.table("Degree of anonymity (Diaz et al.) under Eq. 4-5:", |p| {
                p.degree_of_anonymity
                    .map_or_else(|| "-".into(), |d| format!("{d:.4}"))
            }),
            self.table(
                "P(user traced) in the paper's design with n_m shares, from first principles:",
                |p| format!("{:.4}", p.paper_shares_p_trace),
            ),
        ]
        .join("\n")
    }

    /// The points as CSV, one row per point.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "figure,users,entries,exchanges,corrupt_entries,corrupt_exchanges,p_trace,r_trace,count_entropy,expected_traced_fraction,degree_of_anonymity,paper_shares_p_trace\n",
        );
        for p in &self.points {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{}",
                self.figure,
                self.users,
                self.entries,
                self.exchanges,
                p.corrupt_entries,
                p.corrupt_exchanges,
                p.p_trace,
                p.r_trace,
                p.count_entropy,
                p.expected_traced_fraction,
                p.degree_of_anonymity
                    .map_or_else(String::new, |d| d.to_string()),
                p.paper_shares_p_trace,
            );
        }
        s
    }

    /// Writes `fig<name>.svg`, `.json` and `.csv` into `dir`; returns the paths.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, FigureError> {
        std::fs::create_dir_all(dir).map_err(|e| FigureError::Io(dir.to_path_buf(), e))?;
        let stem = format!("fig{}", self.figure);
        let json = dir.join(format!("{stem}.json"));
        let csv = dir.join(format!("{stem}.csv"));
        let svg = dir.join(format!("{stem}.svg"));
        let text =
            serde_json::to_string_pretty(self).map_err(|e| FigureError::Plot(e.to_string()))?;
        std::fs::write(&json, text + "\n").map_err(|e| FigureError::Io(json.clone(), e))?;
        std::fs::write(&csv, self.to_csv()).map_err(|e| FigureError::Io(csv.clone(), e))?;
        self.plot(&svg)
            .map_err(|e| FigureError::Plot(e.to_string()))?;
        Ok(vec![svg, json, csv])
    }

    /// Left: `R_trace` as in the paper. Right: degree of anonymity (solid) and expected
    /// traced fraction (dashed), both in [0, 1].
    fn plot(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        let (xn, sn) = (short(self.x), short(self.series));
        let x_lo = *self.xs.first().ok_or("empty figure")? as f64;
        let x_hi = *self.xs.last().ok_or("empty figure")? as f64;
        let unit = if self.log_base == serde_json::json!(2) {
            "bits"
        } else {
            "nats"
        };
        let r_max = self.points.iter().map(|p| p.r_trace).fold(0.0, f64::max) * 1.1 + 1e-9;
        let x_desc = format!(
            "{xn}: corrupted {} servers",
            if xn == "CE" { "entry" } else { "exchange" }
        );

        let mut chart = ChartBuilder::on(&left)
            .caption(
                format!("Fig. {}: R_trace (Eq. 6), as in the paper", self.figure),
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x_lo..x_hi, 0.0..r_max)?;
        chart
            .configure_mesh()
            .x_desc(x_desc.as_str())
            .y_desc(format!("R_trace ({unit})"))
            .x_labels(self.xs.len())
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        for (si, sv) in self.series_values.iter().enumerate() {
            let colour = Palette99::pick(si).to_rgba();
            let pts: Vec<(f64, f64)> = (0..self.xs.len())
                .map(|xi| (self.xs[xi] as f64, self.point(si, xi).r_trace))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
                .label(format!("{sn}={sv}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;

        let mut chart = ChartBuilder::on(&right)
            .caption(
                "degree of anonymity (solid), traced fraction (dashed)",
                ("sans-serif", 20),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x_lo..x_hi, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc(x_desc.as_str())
            .y_desc("d (Diaz et al.) / E[X]/n")
            .x_labels(self.xs.len())
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        for (si, sv) in self.series_values.iter().enumerate() {
            let colour = Palette99::pick(si).to_rgba();
            let d: Vec<(f64, f64)> = (0..self.xs.len())
                .filter_map(|xi| {
                    self.point(si, xi)
                        .degree_of_anonymity
                        .map(|d| (self.xs[xi] as f64, d))
                })
                .collect();
            let f: Vec<(f64, f64)> = (0..self.xs.len())
                .map(|xi| {
                    (
                        self.xs[xi] as f64,
                        self.point(si, xi).expected_traced_fraction,
                    )
                })
                .collect();
            chart
                .draw_series(LineSeries::new(d, colour.stroke_width(2)))?
                .label(format!("{sn}={sv}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart.draw_series(DashedLineSeries::new(f, 6, 4, colour.stroke_width(2)))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::MiddleLeft)
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// Why writing a figure failed.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("cannot draw the plot: {0}")]
    Plot(String),
}
