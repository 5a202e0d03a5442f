//! Matvec phases for persistent kernels: one dispatch whose workgroups run several dependent
//! matrix-vector products, with a grid barrier ([`crate::GRID_SYNC_WGSL`]) between them,
//! instead of one dispatch each. Each phase reads its input quantized to 8-bit blocks in
//! global memory (written by the kernel before a barrier) and every workgroup takes a
//! share of the rows (persistent_rows.wgsl, with the direct kernel's unit files).
//!
//! A kernel composes [`persistent_prelude`] once and [`persistent_phase`] per phase; each
//! phase's names carry the phase's suffix, so phases of different weight types share one
//! module. The kernel defines `xq_word(i)`, the words holding each phase's input
//! quantized (where [`XqRegion`] says), defines per phase `P` `store_P(row, sum)`, and calls
//! `phase_rows_P(workgroup, workgroups, t, matrix)`.

use gguf::GgmlType;

use super::direct::{direct_unit, DirectInput, INT_DOT_WGSL, Q6_K_CODES_WGSL};
use super::Q8Format;
use crate::weights::GpuMatrix;

const INPUT_WGSL: &str = include_str!("persistent_input.wgsl");
const ROWS_WGSL: &str = include_str!("persistent_rows.wgsl");

/// Environment variable: threads per row of every persistent phase (a power of two; for
/// measurements), else about four units per thread; at most the subgroup size where rows
/// are summed by shuffles.
pub const PERSISTENT_TPR_ENV: &str = "WEB_RWKV_PERSISTENT_TPR";

/// Workgroup size of persistent kernels.
pub const PERSISTENT_WG_SIZE: u32 = 256;

/// A phase's matrix as the kernel reads it (mirrors PhaseMatrix in persistent_input.wgsl).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
pub struct PhaseMatrix {
    pub rows: u32,
    pub blocks_per_row: u32,
    pub row_words: u32,
    pub scale_base: u32,
}

impl PhaseMatrix {
    /// `w` as one phase's matrix, with the buffer to bind, if the persistent phases run its
    /// type (those the direct kernel reads with 8-bit inputs) and it is in one part.
    pub fn of(w: &GpuMatrix) -> Option<(PhaseMatrix, &wgpu::Buffer)> {
        persistent_format(w.ty)?;
        let [part] = w.parts.as_slice() else {
            return None;
        };
        let m = PhaseMatrix {
            rows: w.rows as u32,
            blocks_per_row: w.blocks_per_row as u32,
            row_words: w.row_words as u32,
            scale_base: part.scale_base as u32,
        };
        Some((m, &part.buffer))
    }
}

/// The 8-bit input format of a weight type the persistent phases run, if they do: those the
/// direct kernel reads with 8-bit inputs in whole 16-byte units (not the word-read types of
/// words.wgsl, whose helpers the phases do not have).
pub fn persistent_format(ty: GgmlType) -> Option<Q8Format> {
    let (unit, input) = direct_unit(ty)?;
    if super::wgsl_const(unit, "RB_WORDS") != Some(4) {
        return None;
    }
    match input {
        DirectInput::Q8(f) => Some(f),
        DirectInput::F32 => None,
    }
}

/// The shared part: rounding.wgsl, the unit files' helpers, persistent_input.wgsl, and the
/// rows' sums, by subgroup shuffles where `subgroup` (the device's fixed subgroup size) is
/// given.
pub fn persistent_prelude(subgroup: Option<u32>) -> String {
    let sum = if subgroup.is_some() {
        include_str!("persistent_sum_shuffle.wgsl")
    } else {
        include_str!("persistent_sum_tree.wgsl")
    };
    format!(
        "const PWG_SIZE: u32 = {PERSISTENT_WG_SIZE}u;\n{}\n{}\n{}\n{}\n{sum}",
        super::ROUNDING_WGSL,
        Q6_K_CODES_WGSL,
        INT_DOT_WGSL,
        INPUT_WGSL
    )
}

/// Where a phase's input sits in the kernel's `xq_word` words (rwkv-gpu's Q8Input layout for
/// `values` values from word `at`): its codes, block scales and (Q8_K) sums per 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XqRegion {
    pub codes: u32,
    pub d: u32,
    pub bs: u32,
    /// The first word past the region, rounded up to 64 words (256 bytes: a workgroup
    /// never caches a line of the next region while reading this one).
    pub end: u32,
}

impl XqRegion {
    /// The region of `values` values (a multiple of 256) from word `at`.
    pub fn new(at: u32, values: u32) -> XqRegion {
        let d = at + values / 4;
        // Room for Q8_0's scale per 32 (Q8_K uses one per 256).
        let bs = d + values / 32;
        let end = (bs + values / 16).next_multiple_of(64);
        XqRegion {
            codes: at,
            d,
            bs,
            end,
        }
    }
}

/// Phase `name`: a matvec with weights of type `ty` in rows of `cols` values, bound at
/// `binding` of group 0, its input at `input`; `None` for types the phases do not run.
/// `subgroup` as for [`persistent_prelude`] (it caps the threads per row).
pub fn persistent_phase(
    ty: GgmlType,
    name: &str,
    binding: u32,
    cols: u32,
    subgroup: Option<u32>,
    input: XqRegion,
) -> Option<String> {
    let format = persistent_format(ty)?;
    let (unit, _) = direct_unit(ty)?;
    let units_per_row = cols / super::wgsl_const(unit, "UNIT_VALUES")?;
    let cap = subgroup.unwrap_or(64).min(64);
    let tpr = crate::env::env_parse::<u32>(PERSISTENT_TPR_ENV)
        .filter(|t| t.is_power_of_two())
        .unwrap_or((units_per_row / 4).next_power_of_two())
        .clamp(4, cap);
    // Two row steps at a time (`WEB_RWKV_PERSISTENT_ROWS` = 2, for measurements): better
    // with 264 workgroups on an H200, worse than one with 528.
    let paired = crate::env::env_parse::<u32>("WEB_RWKV_PERSISTENT_ROWS") == Some(2);
    let source = format!(
        "const TPR: u32 = {tpr}u;\nconst PAIRED: bool = {paired};\nconst XQ_BLOCK: u32 = {}u;\n\
         const XQ_CODES: u32 = {}u;\nconst XQ_D: u32 = {}u;\nconst XQ_BS: u32 = {}u;\n{unit}\n{}",
        format.block(),
        input.codes,
        input.d,
        input.bs,
        ROWS_WGSL.replace("WBINDING", &binding.to_string())
    );
    let mut names: Vec<String> = [
        "TPR",
        "XQ_BLOCK",
        "XQ_CODES",
        "XQ_D",
        "XQ_BS",
        "W",
        "SCALE_BASE",
        "wl",
        "w_word",
        "side_scale",
        "x_codes",
        "x_scale",
        "x_sum16",
        "phase_rows",
        "rows_dot",
        "row_dot",
        "PAIRED",
        "store",
    ]
    .map(String::from)
    .to_vec();
    names.extend(defined_names(unit));
    Some(suffix_names(&source, &names, name))
}

/// The names a WGSL file defines at its top level (functions, structs, constants).
fn defined_names(src: &str) -> Vec<String> {
    src.lines()
        .filter_map(|l| {
            let mut words = l.split(|c: char| !(c.is_alphanumeric() || c == '_'));
            match words.next()? {
                "fn" | "struct" | "const" => words.find(|w| !w.is_empty()).map(String::from),
                _ => None,
            }
        })
        .collect()
}

/// `src` with every identifier in `names` followed by `_suffix`.
fn suffix_names(src: &str, names: &[String], suffix: &str) -> String {
    let mut out = String::with_capacity(src.len() + 1024);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(word);
        if names.iter().any(|n| n == word) {
            out.push('_');
            out.push_str(suffix);
        }
        word.clear();
    };
    for c in src.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_whole_names_only() {
        let names = ["wl".to_string(), "Unit".to_string()];
        let out = suffix_names(
            "fn f(u: Unit) -> u32 { return wl(u.wl2) + wlx; }",
            &names,
            "k",
        );
        assert_eq!(out, "fn f(u: Unit_k) -> u32 { return wl_k(u.wl2) + wlx; }");
    }

    #[test]
    fn finds_top_level_names() {
        let names = defined_names(
            "const UNITS: u32 = 8u;\nstruct Unit {\n  a: u32,\n}\nfn load_unit(a: u32) {}\n",
        );
        assert_eq!(names, ["UNITS", "Unit", "load_unit"]);
    }
}
