//! The column layout of the store's tables. One table per row type ([`run_columns`],
//! [`curve_columns`], [`generation_columns`]) drives both writing ([`to_frame`]) and
//! reading ([`from_frame`]): a new field is one entry, and whether a column holds
//! strings, integers or floats follows from the field's Rust type ([`Field`]).
//!
//! `runs.parquet` holds, in this order: study, stage, unit_id, pack_id, gene and its four
//! components (written for convenience, read back through `gene`), seed, preset, one
//! column per training setting (alphabetical; counts as integers, reals as floats), then
//! the outcome and provenance columns.

use crate::gene::Gene;
use crate::record::{CurveRow, GenerationRow, Operator, RaceRow, RunRow, Stage};
use crate::train::{FieldKind, FieldValue, Preset, TrainConfig};
use anyhow::{anyhow, bail, Result};
use polars::prelude::*;

/// The Parquet type of a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// UTF-8 strings.
    Str,
    /// 64-bit signed integers, nullable.
    Int,
    /// 64-bit floats, nullable.
    Float,
    /// Booleans.
    Bool,
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// A string (never null in the store).
    Str(String),
    /// An integer or null.
    Int(Option<i64>),
    /// A float or null.
    Float(Option<f64>),
    /// A boolean (a null reads as false).
    Bool(bool),
}

/// A Rust type that can be a column.
pub trait Field: Sized {
    /// Its column type.
    const TYPE: ColType;
    /// As a cell.
    fn to_cell(&self) -> Cell;
    /// From a cell of its column type (what a missing value reads as is the type's choice).
    fn from_cell(c: Cell) -> Result<Self, String>;
}

fn wrong(c: &Cell, want: &str) -> String {
    format!("expected {want}, found {c:?}")
}

impl Field for String {
    const TYPE: ColType = ColType::Str;
    fn to_cell(&self) -> Cell {
        Cell::Str(self.clone())
    }
    fn from_cell(c: Cell) -> Result<Self, String> {
        match c {
            Cell::Str(s) => Ok(s),
            c => Err(wrong(&c, "a string")),
        }
    }
}

/// Parsed from and written as its text.
macro_rules! text_field {
    ($t:ty) => {
        impl Field for $t {
            const TYPE: ColType = ColType::Str;
            fn to_cell(&self) -> Cell {
                Cell::Str(self.to_string())
            }
            fn from_cell(c: Cell) -> Result<Self, String> {
                String::from_cell(c)?.parse().map_err(|e| format!("{e}"))
            }
        }
    };
}
text_field!(Gene);
text_field!(Stage);
text_field!(Operator);

/// Unsigned integers; a null reads as 0.
macro_rules! int_field {
    ($t:ty) => {
        impl Field for $t {
            const TYPE: ColType = ColType::Int;
            fn to_cell(&self) -> Cell {
                Cell::Int(Some(*self as i64))
            }
            fn from_cell(c: Cell) -> Result<Self, String> {
                match c {
                    Cell::Int(v) => Ok(v.unwrap_or(0) as $t),
                    c => Err(wrong(&c, "an integer")),
                }
            }
        }
    };
}
int_field!(u64);
int_field!(u32);

impl Field for Option<u64> {
    const TYPE: ColType = ColType::Int;
    fn to_cell(&self) -> Cell {
        Cell::Int(self.map(|v| v as i64))
    }
    fn from_cell(c: Cell) -> Result<Self, String> {
        match c {
            Cell::Int(v) => Ok(v.map(|v| v as u64)),
            c => Err(wrong(&c, "an integer")),
        }
    }
}

impl Field for bool {
    const TYPE: ColType = ColType::Bool;
    fn to_cell(&self) -> Cell {
        Cell::Bool(*self)
    }
    fn from_cell(c: Cell) -> Result<Self, String> {
        match c {
            Cell::Bool(v) => Ok(v),
            c => Err(wrong(&c, "a boolean")),
        }
    }
}

/// A float; a null reads as NaN.
impl Field for f64 {
    const TYPE: ColType = ColType::Float;
    fn to_cell(&self) -> Cell {
        Cell::Float(Some(*self))
    }
    fn from_cell(c: Cell) -> Result<Self, String> {
        match c {
            Cell::Float(v) => Ok(v.unwrap_or(f64::NAN)),
            c => Err(wrong(&c, "a float")),
        }
    }
}

impl Field for Option<f64> {
    const TYPE: ColType = ColType::Float;
    fn to_cell(&self) -> Cell {
        Cell::Float(*self)
    }
    fn from_cell(c: Cell) -> Result<Self, String> {
        match c {
            Cell::Float(v) => Ok(v),
            c => Err(wrong(&c, "a float")),
        }
    }
}

/// A cell getter.
pub type Getter<R> = Box<dyn Fn(&R) -> Cell>;
/// A cell setter (`None`: the column is derived from others and only written).
pub type Setter<R> = Option<Box<dyn Fn(&mut R, Cell) -> Result<(), String>>>;

/// One column of a table of `R` rows.
pub struct Column<R> {
    /// Its name.
    pub name: String,
    /// Its type.
    pub ty: ColType,
    /// Reads the cell of a row.
    pub get: Getter<R>,
    /// Writes the cell into a row.
    pub set: Setter<R>,
    /// Added after stores already existed: a table without it reads, leaving the row's
    /// blank value (e.g. `hardware` is empty in stores written before it was recorded).
    pub optional: bool,
}

fn type_of<R, T: Field>(_: fn(&R) -> &T) -> ColType {
    T::TYPE
}

/// The column `$name` of field `$f` of row type `$row`.
macro_rules! field {
    ($row:ty, $f:ident) => {
        Column::<$row> {
            name: stringify!($f).to_string(),
            ty: type_of(|r: &$row| &r.$f),
            get: Box::new(|r: &$row| Field::to_cell(&r.$f)),
            set: Some(Box::new(|r: &mut $row, c: Cell| {
                r.$f = Field::from_cell(c)?;
                Ok(())
            })),
            optional: false,
        }
    };
    ($row:ty, $f:ident, optional) => {
        Column::<$row> {
            optional: true,
            ..field!($row, $f)
        }
    };
}

/// A write-only string column derived from a row.
fn derived<R: 'static>(name: &str, f: fn(&R) -> String) -> Column<R> {
    Column {
        name: name.to_string(),
        ty: ColType::Str,
        get: Box::new(move |r| Cell::Str(f(r))),
        set: None,
        optional: false,
    }
}

/// One column per training setting, alphabetical, typed by [`TrainConfig::FIELDS`].
fn config_columns() -> Vec<Column<RunRow>> {
    let mut fields: Vec<(&'static str, FieldKind)> = TrainConfig::FIELDS.to_vec();
    fields.sort_by_key(|(n, _)| *n);
    fields
        .into_iter()
        .map(|(name, kind)| Column {
            name: name.to_string(),
            ty: match kind {
                FieldKind::Count => ColType::Int,
                FieldKind::Real => ColType::Float,
            },
            get: Box::new(move |r: &RunRow| match r.config.field(name) {
                Some(FieldValue::Count(v)) => Cell::Int(v.map(|x| x as i64)),
                Some(FieldValue::Real(v)) => Cell::Float(v),
                None => Cell::Int(None),
            }),
            set: Some(Box::new(move |r: &mut RunRow, c: Cell| {
                let v = match c {
                    Cell::Int(v) => FieldValue::Count(v.map(|x| x as u64)),
                    Cell::Float(v) => FieldValue::Real(v),
                    c => return Err(wrong(&c, "a number")),
                };
                r.config.set_field(name, v).map_err(|e| e.to_string())
            })),
            optional: false,
        })
        .collect()
}

/// The columns of `runs.parquet`.
pub fn run_columns() -> Vec<Column<RunRow>> {
    let mut c = vec![
        field!(RunRow, study),
        field!(RunRow, stage),
        field!(RunRow, unit_id),
        field!(RunRow, pack_id),
        field!(RunRow, gene),
        derived("similarity", |r: &RunRow| r.gene.similarity.to_string()),
        derived("normalization", |r: &RunRow| {
            r.gene.normalization.to_string()
        }),
        derived("gating", |r: &RunRow| r.gene.gating.to_string()),
        derived("temperature", |r: &RunRow| r.gene.temperature.to_string()),
        field!(RunRow, seed),
        field!(RunRow, preset),
    ];
    c.extend(config_columns());
    c.extend([
        field!(RunRow, params_total),
        field!(RunRow, params_nonembed),
        field!(RunRow, diverged_at),
        field!(RunRow, train_loss),
        field!(RunRow, val_ppl),
        field!(RunRow, test_ppl),
        field!(RunRow, tokens_per_s),
        field!(RunRow, wall_s),
        field!(RunRow, device),
        field!(RunRow, hardware, optional),
        field!(RunRow, stopped_at, optional),
        field!(RunRow, threads),
        field!(RunRow, replicas),
        field!(RunRow, evoattn_version),
        field!(RunRow, engine_version),
        field!(RunRow, git_commit),
        field!(RunRow, data_fingerprint),
        field!(RunRow, started_at),
        field!(RunRow, finished_at),
    ]);
    c
}

/// The columns of `curves.parquet`.
pub fn curve_columns() -> Vec<Column<CurveRow>> {
    vec![
        field!(CurveRow, unit_id),
        field!(CurveRow, step),
        field!(CurveRow, train_loss),
        field!(CurveRow, val_ppl),
    ]
}

/// The columns of `generations.parquet`.
pub fn generation_columns() -> Vec<Column<GenerationRow>> {
    vec![
        field!(GenerationRow, generation),
        field!(GenerationRow, slot),
        field!(GenerationRow, gene),
        field!(GenerationRow, parents),
        field!(GenerationRow, operator),
        field!(GenerationRow, fitness),
        field!(GenerationRow, n_seeds),
        field!(GenerationRow, hurdle_fitness, optional),
        field!(GenerationRow, stopped, optional),
    ]
}

/// The columns of `race.parquet`.
pub fn race_columns() -> Vec<Column<RaceRow>> {
    vec![
        field!(RaceRow, round),
        field!(RaceRow, gene),
        field!(RaceRow, n_seeds),
        field!(RaceRow, mean),
        field!(RaceRow, rank_sum),
        field!(RaceRow, alive),
        field!(RaceRow, eliminated),
        field!(RaceRow, pvalue),
    ]
}

/// A frame of `rows` laid out by `columns`.
pub fn to_frame<R>(rows: &[R], columns: &[Column<R>]) -> Result<DataFrame> {
    let cols = columns
        .iter()
        .map(|c| {
            let cells = rows.iter().map(|r| (c.get)(r));
            let name = c.name.as_str().into();
            match c.ty {
                ColType::Str => polars::prelude::Column::new(
                    name,
                    cells
                        .map(|x| match x {
                            Cell::Str(s) => s,
                            other => format!("{other:?}"),
                        })
                        .collect::<Vec<String>>(),
                ),
                ColType::Int => polars::prelude::Column::new(
                    name,
                    cells
                        .map(|x| match x {
                            Cell::Int(v) => v,
                            _ => None,
                        })
                        .collect::<Vec<Option<i64>>>(),
                ),
                ColType::Float => polars::prelude::Column::new(
                    name,
                    cells
                        .map(|x| match x {
                            Cell::Float(v) => v,
                            _ => None,
                        })
                        .collect::<Vec<Option<f64>>>(),
                ),
                ColType::Bool => polars::prelude::Column::new(
                    name,
                    cells
                        .map(|x| matches!(x, Cell::Bool(true)))
                        .collect::<Vec<bool>>(),
                ),
            }
        })
        .collect();
    Ok(DataFrame::new_infer_height(cols)?)
}

/// The cells of one column of `df`, read as `ty`.
fn cells(df: &DataFrame, name: &str, ty: ColType) -> Result<Vec<Cell>> {
    let c = df
        .column(name)
        .map_err(|_| anyhow!("column `{name}` is missing"))?;
    let bad = |e: PolarsError| anyhow!("column `{name}` has the wrong type: {e}");
    Ok(match ty {
        ColType::Str => c
            .str()
            .map_err(bad)?
            .iter()
            .map(|v| Cell::Str(v.unwrap_or("").to_string()))
            .collect(),
        ColType::Int => c.i64().map_err(bad)?.iter().map(Cell::Int).collect(),
        ColType::Float => c.f64().map_err(bad)?.iter().map(Cell::Float).collect(),
        ColType::Bool => c
            .bool()
            .map_err(bad)?
            .iter()
            .map(|v| Cell::Bool(v.unwrap_or(false)))
            .collect(),
    })
}

/// Rows of `df` read through `columns`, starting from `blank` rows.
pub fn from_frame<R: Clone>(df: &DataFrame, columns: &[Column<R>], blank: R) -> Result<Vec<R>> {
    let mut rows = vec![blank; df.height()];
    for c in columns {
        let Some(set) = &c.set else { continue };
        if c.optional && df.column(&c.name).is_err() {
            continue;
        }
        for (i, (row, cell)) in rows.iter_mut().zip(cells(df, &c.name, c.ty)?).enumerate() {
            if let Err(e) = set(row, cell) {
                bail!("row {i}, column `{}`: {e}", c.name);
            }
        }
    }
    Ok(rows)
}

/// A row to read into (every field is overwritten by a column).
pub(crate) fn blank_run() -> RunRow {
    RunRow {
        study: String::new(),
        stage: Stage::Search,
        unit_id: String::new(),
        pack_id: String::new(),
        gene: Gene::BASELINE,
        seed: 0,
        preset: String::new(),
        config: Preset::Smoke.config(),
        params_total: 0,
        params_nonembed: 0,
        diverged_at: None,
        train_loss: f64::NAN,
        val_ppl: None,
        test_ppl: None,
        tokens_per_s: f64::NAN,
        wall_s: f64::NAN,
        device: String::new(),
        hardware: String::new(),
        stopped_at: None,
        threads: 0,
        replicas: 0,
        evoattn_version: String::new(),
        engine_version: 0,
        git_commit: String::new(),
        data_fingerprint: String::new(),
        started_at: String::new(),
        finished_at: String::new(),
    }
}

/// The `runs.parquet` frame of `rows`.
pub fn runs_frame(rows: &[RunRow]) -> Result<DataFrame> {
    to_frame(rows, &run_columns())
}

/// Reads runs rows back from a `runs.parquet`-shaped frame.
pub fn runs_from_frame(df: &DataFrame) -> Result<Vec<RunRow>> {
    from_frame(df, &run_columns(), blank_run())
}

/// The `curves.parquet` frame of `rows`.
pub fn curves_frame(rows: &[CurveRow]) -> Result<DataFrame> {
    to_frame(rows, &curve_columns())
}

/// Reads curve rows back.
pub fn curves_from_frame(df: &DataFrame) -> Result<Vec<CurveRow>> {
    let blank = CurveRow {
        unit_id: String::new(),
        step: 0,
        train_loss: f64::NAN,
        val_ppl: None,
    };
    from_frame(df, &curve_columns(), blank)
}

/// The `generations.parquet` frame of `rows`.
pub fn generations_frame(rows: &[GenerationRow]) -> Result<DataFrame> {
    to_frame(rows, &generation_columns())
}

/// Reads generation rows back from a `generations.parquet`-shaped frame.
pub fn generations_from_frame(df: &DataFrame) -> Result<Vec<GenerationRow>> {
    let blank = GenerationRow {
        generation: 0,
        slot: 0,
        gene: Gene::BASELINE,
        parents: String::new(),
        operator: Operator::Initial,
        fitness: f64::INFINITY,
        n_seeds: 0,
        hurdle_fitness: None,
        stopped: false,
    };
    from_frame(df, &generation_columns(), blank)
}

/// The `race.parquet` frame of `rows`.
pub fn race_frame(rows: &[RaceRow]) -> Result<DataFrame> {
    to_frame(rows, &race_columns())
}

/// Reads race rows back.
pub fn race_from_frame(df: &DataFrame) -> Result<Vec<RaceRow>> {
    let blank = RaceRow {
        round: 0,
        gene: Gene::BASELINE,
        n_seeds: 0,
        mean: f64::NAN,
        rank_sum: f64::NAN,
        alive: false,
        eliminated: false,
        pvalue: f64::NAN,
    };
    from_frame(df, &race_columns(), blank)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_columns_are_every_setting_typed_by_its_field() {
        let cols = config_columns();
        assert_eq!(cols.len(), TrainConfig::FIELDS.len());
        let ty = |n: &str| cols.iter().find(|c| c.name == n).unwrap().ty;
        assert_eq!(ty("lr"), ColType::Float);
        assert_eq!(ty("steps"), ColType::Int);
        assert_eq!(ty("vocab_cap"), ColType::Int);
        let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
    }

    #[test]
    fn a_missing_or_mistyped_column_names_itself() {
        let rows = vec![blank_run()];
        let mut df = runs_frame(&rows).unwrap();
        let _ = df.drop_in_place("val_ppl").unwrap();
        let e = runs_from_frame(&df).unwrap_err().to_string();
        assert!(e.contains("`val_ppl`") && e.contains("missing"), "{e}");
    }
}
