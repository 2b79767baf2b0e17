//! Fig. 6a and 6b of the paper: `R_trace` over a sweep of corrupted servers with 1000
//! users, 10 entry and 5 exchange servers, beside the sound metrics; and a figure of this
//! system's design beside the paper's at 3 exchange servers. Each is written as Markdown
//! tables (stdout), JSON, CSV and an SVG plot.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use super::designs::{paper_shares_p_trace, AcsDesign, ACS_EXCHANGES};
use super::metrics::{degree_of_anonymity, expected_traced_fraction};
use super::paper::{count_entropy, p_trace, r_trace};
use super::{LogBase, ParamError, Params};

/// The figures `--figure` draws.
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
    /// Not in the paper: P(user traced) and degree of anonymity in this system's design
    /// and in the paper's (3 shares, first principles) with 3 exchange servers, against
    /// corrupted entry servers (0..n_e), one line per corrupted exchange servers (0..3).
    #[value(name = "acs")]
    Acs,
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
    /// Eq. 4.
    pub p_trace: f64,
    /// Eq. 6.
    pub r_trace: f64,
    /// Entropy of Eq. 5's distribution with `k` from 0.
    pub count_entropy: f64,
    pub expected_traced_fraction: f64,
    /// Díaz et al. under Eq. 4–5.
    pub degree_of_anonymity: Option<f64>,
    /// The paper's design with `n_m` shares, from first principles.
    pub paper_shares_p_trace: f64,
    pub paper_shares_degree_of_anonymity: Option<f64>,
    /// This system's design (only where `n_x = 3`).
    pub acs_design_p_trace: Option<f64>,
    pub acs_design_degree_of_anonymity: Option<f64>,
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

/// Why a figure cannot be computed for a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FigureConfigError {
    #[error(transparent)]
    Params(#[from] ParamError),
    #[error("--figure acs is this system's design, which has exactly {ACS_EXCHANGES} exchange servers; got --exchanges {0}")]
    AcsExchanges(u64),
    #[error("--figure {figure} sweeps up to {need} corrupted servers; got --{flag} {have}")]
    TooSmall {
        figure: &'static str,
        need: u64,
        flag: &'static str,
        have: u64,
    },
}

impl Figure {
    fn name(self) -> &'static str {
        match self {
            Figure::Fig6a => "6a",
            Figure::Fig6b => "6b",
            Figure::Acs => "acs",
        }
    }

    /// The number of exchange servers this figure is drawn for by default.
    pub fn default_exchanges(self) -> u64 {
        match self {
            Figure::Fig6a | Figure::Fig6b => FIG6_EXCHANGES,
            Figure::Acs => ACS_EXCHANGES,
        }
    }

    /// Computes the figure for the system `base` (its corruption counts are ignored).
    pub fn compute(self, base: Params, log: LogBase) -> Result<FigureData, FigureConfigError> {
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
            Figure::Acs => {
                if base.exchanges != ACS_EXCHANGES {
                    return Err(FigureConfigError::AcsExchanges(base.exchanges));
                }
                (
                    "corrupt_entries",
                    "corrupt_exchanges",
                    (0..=base.entries).collect(),
                    (0..=ACS_EXCHANGES).collect(),
                )
            }
        };
        let need = |param: &str| {
            let v = if param == x { &xs } else { &series_values };
            v.iter().copied().max().unwrap_or(0)
        };
        for (param, flag, have) in [
            ("corrupt_entries", "entries", base.entries),
            ("corrupt_exchanges", "exchanges", base.exchanges),
        ] {
            if need(param) > have {
                return Err(FigureConfigError::TooSmall {
                    figure: self.name(),
                    need: need(param),
                    flag,
                    have,
                });
            }
        }
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
                let shares_p = paper_shares_p_trace(&params);
                let acs = AcsDesign::new(&params).ok();
                points.push(Point {
                    corrupt_entries: ce,
                    corrupt_exchanges: cx,
                    p_trace: p,
                    r_trace: r_trace(params.users, p, log),
                    count_entropy: count_entropy(params.users, p, log),
                    expected_traced_fraction: expected_traced_fraction(p),
                    degree_of_anonymity: degree_of_anonymity(params.users, p),
                    paper_shares_p_trace: shares_p,
                    paper_shares_degree_of_anonymity: degree_of_anonymity(params.users, shares_p),
                    acs_design_p_trace: acs.as_ref().map(|d| d.p_trace),
                    acs_design_degree_of_anonymity: acs.and_then(|d| d.degree_of_anonymity),
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

    fn unit(&self) -> &'static str {
        if self.log_base == serde_json::json!(2) {
            "bits"
        } else {
            "nats"
        }
    }

    /// The tables printed on stdout.
    pub fn to_markdown(&self) -> String {
        let f4 = |x: f64| format!("{x:.4}");
        let o4 = |x: Option<f64>| x.map_or_else(|| "-".into(), f4);
        let mut parts = vec![format!(
            "Fig. {}: {} users, {} entry servers, {} exchange servers, {} shares per message\n",
            self.figure, self.users, self.entries, self.exchanges, self.shares
        )];
        if self.figure != "acs" {
            parts.push(
                self.table(&format!("R_trace (Eq. 6), {}:", self.unit()), |p| {
                    f4(p.r_trace)
                }),
            );
        }
        parts.push(self.table(
            "P_trace (Eq. 4) = expected fraction of traced users:",
            |p| f4(p.p_trace),
        ));
        parts.push(
            self.table("Degree of anonymity (Diaz et al.) under Eq. 4-5:", |p| {
                o4(p.degree_of_anonymity)
            }),
        );
        parts.push(self.table(
            "P(user traced), the paper's design with n_m shares, from first principles:",
            |p| f4(p.paper_shares_p_trace),
        ));
        parts.push(self.table(
            "Degree of anonymity, the paper's design with n_m shares:",
            |p| o4(p.paper_shares_degree_of_anonymity),
        ));
        if self.figure == "acs" {
            parts.push(self.table("P(user traced), this system's design:", |p| {
                o4(p.acs_design_p_trace)
            }));
            parts.push(
                self.table("Degree of anonymity, this system's design:", |p| {
                    o4(p.acs_design_degree_of_anonymity)
                }),
            );
        }
        parts.join("\n")
    }

    /// The points as CSV, one row per point.
    pub fn to_csv(&self) -> String {
        let mut s = String::from(
            "figure,users,entries,exchanges,shares,corrupt_entries,corrupt_exchanges,p_trace,r_trace,count_entropy,expected_traced_fraction,degree_of_anonymity,paper_shares_p_trace,paper_shares_degree_of_anonymity,acs_design_p_trace,acs_design_degree_of_anonymity\n",
        );
        let o = |x: Option<f64>| x.map_or_else(String::new, |v| v.to_string());
        for p in &self.points {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                self.figure,
                self.users,
                self.entries,
                self.exchanges,
                self.shares,
                p.corrupt_entries,
                p.corrupt_exchanges,
                p.p_trace,
                p.r_trace,
                p.count_entropy,
                p.expected_traced_fraction,
                o(p.degree_of_anonymity),
                p.paper_shares_p_trace,
                o(p.paper_shares_degree_of_anonymity),
                o(p.acs_design_p_trace),
                o(p.acs_design_degree_of_anonymity),
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

    /// Two panels. Fig. 6: left `R_trace` as in the paper; right degree of anonymity
    /// (solid) and expected traced fraction (dashed). `acs`: left P(user traced), right
    /// degree of anonymity; solid this system, dashed the paper's design with `n_m` shares.
    fn plot(&self, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        if self.figure == "acs" {
            self.panel(
                &left,
                "P(user traced): this system vs the paper's design",
                "P(user traced)",
                1.0,
                |p| p.acs_design_p_trace,
                Some(|p: &Point| Some(p.paper_shares_p_trace)),
                Dashed::LastSeries("paper, 3 shares, any CX>=1"),
                SeriesLabelPosition::UpperLeft,
            )?;
            self.panel(
                &right,
                "degree of anonymity: this system vs the paper's design",
                "d (Diaz et al.)",
                1.0,
                |p| p.acs_design_degree_of_anonymity,
                Some(|p: &Point| p.paper_shares_degree_of_anonymity),
                Dashed::LastSeries("paper, 3 shares, any CX>=1"),
                SeriesLabelPosition::UpperRight,
            )?;
        } else {
            // Headroom above the curves for the legend.
            let r_max = self.points.iter().map(|p| p.r_trace).fold(0.0, f64::max) * 1.4 + 1e-9;
            self.panel(
                &left,
                &format!("Fig. {}: R_trace (Eq. 6), as in the paper", self.figure),
                &format!("R_trace ({})", self.unit()),
                r_max,
                |p| Some(p.r_trace),
                None::<fn(&Point) -> Option<f64>>,
                Dashed::PerSeries,
                SeriesLabelPosition::UpperLeft,
            )?;
            self.panel(
                &right,
                "degree of anonymity (solid), traced fraction (dashed)",
                "d (Diaz et al.) / E[X]/n",
                1.0,
                |p| p.degree_of_anonymity,
                Some(|p: &Point| Some(p.expected_traced_fraction)),
                Dashed::PerSeries,
                SeriesLabelPosition::MiddleLeft,
            )?;
        }
        root.present()?;
        Ok(())
    }

    /// One panel: a solid line with dots per series, and optionally a dashed one.
    #[allow(clippy::too_many_arguments)]
    fn panel<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
        caption: &str,
        y_desc: &str,
        y_max: f64,
        solid: impl Fn(&Point) -> Option<f64>,
        dashed: Option<impl Fn(&Point) -> Option<f64>>,
        dash_style: Dashed,
        legend_at: SeriesLabelPosition,
    ) -> Result<(), Box<dyn std::error::Error>>
    where
        DB::ErrorType: 'static,
    {
        let (xn, sn) = (short(self.x), short(self.series));
        let x_lo = *self.xs.first().ok_or("empty figure")? as f64;
        let x_hi = *self.xs.last().ok_or("empty figure")? as f64;
        let x_desc = format!(
            "{xn}: corrupted {} servers",
            if xn == "CE" { "entry" } else { "exchange" }
        );
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(x_lo..x_hi, 0.0..y_max)?;
        chart
            .configure_mesh()
            .x_desc(x_desc.as_str())
            .y_desc(y_desc)
            .x_labels(self.xs.len())
            .x_label_formatter(&|x| format!("{x:.0}"))
            .draw()?;
        let series = |si: usize, f: &dyn Fn(&Point) -> Option<f64>| -> Vec<(f64, f64)> {
            (0..self.xs.len())
                .filter_map(|xi| f(self.point(si, xi)).map(|y| (self.xs[xi] as f64, y)))
                .collect()
        };
        for (si, sv) in self.series_values.iter().enumerate() {
            let colour = Palette99::pick(si).to_rgba();
            let pts = series(si, &solid);
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
                .label(format!("{sn}={sv}"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
            if let (Some(dashed), Dashed::PerSeries) = (&dashed, dash_style) {
                let pts = series(si, dashed);
                chart.draw_series(DashedLineSeries::new(pts, 6, 4, colour.stroke_width(2)))?;
            }
        }
        if let (Some(dashed), Dashed::LastSeries(label)) = (&dashed, dash_style) {
            let pts = series(self.series_values.len() - 1, dashed);
            let black = BLACK.stroke_width(2);
            chart
                .draw_series(DashedLineSeries::new(pts, 6, 4, black))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], black));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(legend_at)
            .draw()?;
        Ok(())
    }
}

/// How a panel draws its dashed lines.
#[derive(Clone, Copy, Debug)]
enum Dashed {
    /// One per series, in the series' colour.
    PerSeries,
    /// One, black, from the last series (where the dashed metric is the same for every
    /// series that matters), with this legend label.
    LastSeries(&'static str),
}

/// Why writing a figure failed.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    #[error("cannot write {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("cannot draw the plot: {0}")]
    Plot(String),
}
