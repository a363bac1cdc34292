//! Charts of one cell resource, drawn with plotters as SVG or PNG: the daily means of the
//! history (and the hourly means of the last days), the forecast's p50 with its p10–p90 band,
//! the limit and the headroom line, and a mark at the report's time.
//!
//! Text is drawn with an ASCII subset of DejaVu Sans built into the binary
//! (`planner/fonts`, under the Bitstream Vera licence), so charts look the same on every
//! machine and need no system fonts.

use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::forecast::{DAY_MS, HOUR_MS};
use crate::plan::{Forecasted, format_time, human, label};
use crate::{Error, Result};

const FONT: &[u8] = include_bytes!("../fonts/DejaVuSans-subset.ttf");
const SIZE: (u32, u32) = (900, 360);
/// Days of forecast drawn, at most (and at most the horizon).
const FORECAST_DAYS: u32 = 120;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Svg,
    Png,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Svg => "image/svg+xml",
            Format::Png => "image/png",
        }
    }
}

/// How an HTML page refers to charts: drawn into the page, or served beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// SVG inside the page: one self-contained file.
    Inline,
    /// SVG inside the page, with links to `/charts/...` for SVG and PNG files.
    Served,
}

/// The chart's URL path under `strata planner serve`, without the extension.
pub fn path(f: &Forecasted) -> (String, String) {
    let s = &f.series;
    let query = s
        .pool
        .as_ref()
        .map_or_else(String::new, |p| format!("?pool={}", percent(p)));
    (
        format!("/charts/{}/{}", percent(&s.cell), percent(&s.resource)),
        query,
    )
}

/// Percent-encodes everything but unreserved characters (RFC 3986, section 2.3).
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_font("sans-serif", FontStyle::Normal, FONT).is_ok()) {
        Ok(())
    } else {
        Err(Error::Config(
            "the built-in chart font is not a font".into(),
        ))
    }
}

/// Draws `f` as of `at_ms`.
pub fn draw(
    f: &Forecasted,
    at_ms: i64,
    headroom: f64,
    horizon_days: u32,
    format: Format,
) -> Result<Vec<u8>> {
    font()?;
    let failed = |e: String| Error::Config(format!("cannot draw the chart: {e}"));
    match format {
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
                plot(&root, f, at_ms, headroom, horizon_days).map_err(|e| failed(e.to_string()))?;
                root.present().map_err(|e| failed(e.to_string()))?;
            }
            Ok(svg.into_bytes())
        }
        Format::Png => {
            let mut rgb = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
                plot(&root, f, at_ms, headroom, horizon_days).map_err(|e| failed(e.to_string()))?;
                root.present().map_err(|e| failed(e.to_string()))?;
            }
            let mut out = Vec::new();
            let mut encoder = png::Encoder::new(&mut out, SIZE.0, SIZE.1);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(|e| failed(e.to_string()))?;
            writer
                .write_image_data(&rgb)
                .map_err(|e| failed(e.to_string()))?;
            writer.finish().map_err(|e| failed(e.to_string()))?;
            Ok(out)
        }
    }
}

type Plotted<DB> = std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn plot<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    f: &Forecasted,
    at_ms: i64,
    headroom: f64,
    horizon_days: u32,
) -> Plotted<DB> {
    root.fill(&WHITE)?;
    let s = &f.series;
    let days = FORECAST_DAYS.min(horizon_days);
    let band = f
        .model
        .as_ref()
        .map(|m| m.bands(days, 3 * HOUR_MS))
        .unwrap_or_default();
    let start = s.daily.first().map_or(at_ms - 7 * DAY_MS, |p| p.0 - DAY_MS);
    let end = at_ms + i64::from(days) * DAY_MS;
    let mut top = s
        .daily
        .iter()
        .chain(&s.hourly)
        .map(|p| p.1)
        .chain(band.iter().map(|b| b.p90))
        .fold(0.0, f64::max);
    if let Some(limit) = s.limit {
        top = top.min(limit * 1.5).max(limit * 1.05);
    }
    let top = if top > 0.0 { top } else { 1.0 };
    let title = format!("{} {}", s.cell, label(&s.resource, s.pool.as_deref()));
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(start as f64..end as f64, 0.0..top)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(235, 235, 235))
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&|x| format_time(*x as i64)[..10].to_string())
        .y_label_formatter(&|y| human(*y))
        .draw()?;
    let blue = RGBColor(31, 119, 180);
    let clipped = |v: f64| v.min(top);
    if !band.is_empty() {
        let mut outline: Vec<(f64, f64)> = band
            .iter()
            .map(|b| (b.t_ms as f64, clipped(b.p90)))
            .collect();
        outline.extend(band.iter().rev().map(|b| (b.t_ms as f64, clipped(b.p10))));
        chart
            .draw_series(std::iter::once(Polygon::new(
                outline,
                blue.mix(0.18).filled(),
            )))?
            .label("p10-p90")
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 16, y + 5)], blue.mix(0.18).filled())
            });
        chart
            .draw_series(LineSeries::new(
                band.iter().map(|b| (b.t_ms as f64, clipped(b.p50))),
                blue.stroke_width(1),
            ))?
            .label("forecast p50")
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], blue));
    }
    chart.draw_series(LineSeries::new(
        s.hourly.iter().map(|p| (p.0 as f64, clipped(p.1))),
        RGBColor(120, 120, 120).stroke_width(1),
    ))?;
    chart
        .draw_series(LineSeries::new(
            s.daily.iter().map(|p| (p.0 as f64, clipped(p.1))),
            BLACK.stroke_width(2),
        ))?
        .label("daily mean")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    if let Some(limit) = s.limit {
        let red = RGBColor(214, 39, 40);
        let orange = RGBColor(255, 127, 14);
        for (value, colour, name) in [
            (limit, red, "limit"),
            (limit * headroom, orange, "headroom"),
        ] {
            chart
                .draw_series(LineSeries::new(
                    [(start as f64, value), (end as f64, value)],
                    colour.stroke_width(2),
                ))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 16, y)], colour.stroke_width(2))
                });
        }
    }
    chart.draw_series(LineSeries::new(
        [(at_ms as f64, 0.0), (at_ms as f64, top)],
        RGBColor(150, 150, 150).stroke_width(1),
    ))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font(("sans-serif", 12))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forecast::{Input, fit};
    use crate::scan::ResourceSeries;

    fn forecasted() -> Forecasted {
        let now = 1_790_000_000_000 / DAY_MS * DAY_MS;
        let daily: Vec<(i64, f64)> = (0..60)
            .map(|d| (now - (59 - d) * DAY_MS, 100.0 + d as f64))
            .collect();
        let hourly: Vec<(i64, f64)> = (0..168)
            .map(|h| (now - (167 - h) * HOUR_MS, 160.0))
            .collect();
        let model = fit(Input {
            daily: &daily,
            hourly: &hourly,
            now_ms: now,
            min_history_days: 14,
            driver: None,
        });
        Forecasted {
            series: ResourceSeries {
                region: "r".into(),
                cell: "c 1".into(),
                resource: "pod_ips".into(),
                pool: Some("pool/a".into()),
                daily,
                hourly,
                limit: Some(400.0),
                per_node: None,
            },
            warning: None,
            model,
        }
    }

    #[test]
    fn draws_svg_and_png() {
        let f = forecasted();
        let at = f.series.daily.last().map_or(0, |p| p.0);
        let svg = String::from_utf8(draw(&f, at, 0.6, 365, Format::Svg).unwrap_or_default())
            .unwrap_or_default();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("headroom") && svg.contains("forecast p50"));
        let png = draw(&f, at, 0.6, 365, Format::Png).unwrap_or_default();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn chart_paths_are_percent_encoded() {
        assert_eq!(
            path(&forecasted()),
            (
                "/charts/c%201/pod_ips".to_string(),
                "?pool=pool%2Fa".to_string()
            )
        );
    }
}
