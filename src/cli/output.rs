//! Output for every command: a value is printed as text for a terminal or, with `--json`,
//! as JSON Lines (one object per record). One JSON convention everywhere: finite numbers
//! are numbers, non-finite ones the strings `"NaN"`, `"Infinity"`, `"-Infinity"`, absent
//! values `null`.

use anyhow::Result;
use serde_json::Value;
use std::io::Write;

/// A number under the JSON convention above.
pub fn num(x: f64) -> Value {
    evoattn::stats::compare::jnum(x)
}

/// An optional number under the JSON convention (`None` is `null`).
pub fn opt(x: Option<f64>) -> Value {
    x.map_or(Value::Null, num)
}

/// What a command prints.
pub trait Render {
    /// Its records as JSON objects, one line each.
    fn json(&self) -> Vec<Value>;
    /// Its text for a terminal.
    fn text(&self) -> String;
}

/// Prints `r` as JSON Lines (`json`) or as text, to standard output. A closed pipe comes
/// back as an I/O error, which `main` treats as the end of output.
pub fn print(r: &dyn Render, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        for v in r.json() {
            writeln!(out, "{v}")?;
        }
    } else {
        let t = r.text();
        write!(out, "{t}")?;
        if !t.is_empty() && !t.ends_with('\n') {
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(())
}

/// A value that is already formatted: `json` lines and `text`.
pub struct Plain {
    /// JSON records.
    pub json: Vec<Value>,
    /// Text.
    pub text: String,
}

impl Render for Plain {
    fn json(&self) -> Vec<Value> {
        self.json.clone()
    }
    fn text(&self) -> String {
        self.text.clone()
    }
}

/// `x` with two decimals, or `-` when absent.
pub fn fmt_opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.2}")).unwrap_or_else(|| "-".into())
}
