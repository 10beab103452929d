//! The Prometheus text exposition format, version 0.0.4: metric families
//! (`# HELP`, `# TYPE`) followed by their samples, label values and help
//! text escaped, histograms as cumulative `_bucket{le=..}` samples with
//! `_sum` and `_count`. Writes into a string; knows nothing of servers or
//! sockets.

use std::fmt::Write;

/// The `Content-Type` of a scrape answer in this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (until the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Observations counted in cumulative buckets.
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Label name/value pairs of one sample, written in the order given.
pub type Labels<'a> = [(&'a str, &'a str)];

/// A fixed-point number: `value` in units of 10^-`scale` (microseconds are
/// scale 6 of seconds), written exactly, without trailing zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    /// The number times 10^`scale`.
    pub value: u64,
    /// Decimal digits after the point.
    pub scale: u32,
}

impl std::fmt::Display for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let unit = 10u64.pow(self.scale);
        write!(f, "{}", self.value / unit)?;
        let frac = self.value % unit;
        if frac == 0 {
            return Ok(());
        }
        let digits = format!("{frac:0width$}", width = self.scale as usize);
        write!(f, ".{}", digits.trim_end_matches('0'))
    }
}

/// Builds one exposition document.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    /// Starts a metric family: its help line and its type.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        self.escaped(help, false);
        let _ = writeln!(self.out, "\n# TYPE {name} {}", kind.as_str());
    }

    /// Writes `text` with backslashes and newlines escaped, and double
    /// quotes too in a label value (`quoted`).
    fn escaped(&mut self, text: &str, quoted: bool) {
        for c in text.chars() {
            match c {
                '\\' => self.out.push_str("\\\\"),
                '\n' => self.out.push_str("\\n"),
                '"' if quoted => self.out.push_str("\\\""),
                c => self.out.push(c),
            }
        }
    }

    fn name_and_labels(&mut self, name: &str, labels: &Labels, le: Option<&str>) {
        self.out.push_str(name);
        let extra = le.map(|le| ("le", le));
        let mut all = labels.iter().copied().chain(extra).peekable();
        if all.peek().is_none() {
            return;
        }
        self.out.push('{');
        for (i, (label, value)) in all.enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(label);
            self.out.push_str("=\"");
            self.escaped(value, true);
            self.out.push('"');
        }
        self.out.push('}');
    }

    /// A sample of the current family: `name{labels} value`. `value` is
    /// anything that prints as a Prometheus number (an integer, a
    /// [`Fixed`]; for floats see [`Exposition::sample_f64`]).
    pub fn sample(&mut self, name: &str, labels: &Labels, value: impl std::fmt::Display) {
        self.name_and_labels(name, labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// A floating-point sample, with Prometheus' spelling of infinities and
    /// NaN.
    pub fn sample_f64(&mut self, name: &str, labels: &Labels, value: f64) {
        if value.is_nan() {
            self.sample(name, labels, "NaN");
        } else if value.is_infinite() {
            self.sample(name, labels, if value > 0.0 { "+Inf" } else { "-Inf" });
        } else {
            self.sample(name, labels, value);
        }
    }

    /// A histogram of the current family: one `_bucket` per cumulative
    /// `(upper bound, count)`, the `+Inf` bucket, `_sum` and `_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &Labels,
        buckets: impl Iterator<Item = (Fixed, u64)>,
        count: u64,
        sum: Fixed,
    ) {
        let bucket = format!("{name}_bucket");
        for (bound, below) in buckets {
            self.name_and_labels(&bucket, labels, Some(&bound.to_string()));
            let _ = writeln!(self.out, " {below}");
        }
        self.name_and_labels(&bucket, labels, Some("+Inf"));
        let _ = writeln!(self.out, " {count}");
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, count);
    }

    /// The document.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_is_exact() {
        let f = |value, scale| Fixed { value, scale }.to_string();
        assert_eq!(f(100, 6), "0.0001");
        assert_eq!(f(2_500_000, 6), "2.5");
        assert_eq!(f(10_000_000, 6), "10");
        assert_eq!(f(0, 9), "0");
        assert_eq!(f(1_000_000_001, 9), "1.000000001");
        assert_eq!(f(7, 0), "7");
    }

    #[test]
    fn families_samples_and_escapes() {
        let mut e = Exposition::default();
        e.family(
            "x_total",
            Kind::Counter,
            "Back\\slash and\nnewline \"kept\".",
        );
        e.sample("x_total", &[("model", "a\"b\\c\nd"), ("version", "1")], 3);
        e.family("up", Kind::Gauge, "No labels.");
        e.sample_f64("up", &[], 0.25);
        e.sample_f64("up", &[], f64::INFINITY);
        e.sample_f64("up", &[], f64::NAN);
        assert_eq!(
            e.finish(),
            "# HELP x_total Back\\\\slash and\\nnewline \"kept\".\n\
             # TYPE x_total counter\n\
             x_total{model=\"a\\\"b\\\\c\\nd\",version=\"1\"} 3\n\
             # HELP up No labels.\n\
             # TYPE up gauge\n\
             up 0.25\n\
             up +Inf\n\
             up NaN\n"
        );
    }

    #[test]
    fn histogram_lines() {
        let mut e = Exposition::default();
        e.family("h", Kind::Histogram, "H.");
        let us = |value| Fixed { value, scale: 6 };
        e.histogram(
            "h",
            &[("model", "m")],
            [(us(100), 1), (us(250), 3)].into_iter(),
            4,
            Fixed {
                value: 1_500_000,
                scale: 9,
            },
        );
        assert_eq!(
            e.finish(),
            "# HELP h H.\n# TYPE h histogram\n\
             h_bucket{model=\"m\",le=\"0.0001\"} 1\n\
             h_bucket{model=\"m\",le=\"0.00025\"} 3\n\
             h_bucket{model=\"m\",le=\"+Inf\"} 4\n\
             h_sum{model=\"m\"} 0.0015\n\
             h_count{model=\"m\"} 4\n"
        );
    }
}
