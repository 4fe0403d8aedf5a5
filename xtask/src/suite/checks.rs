//! The check language of the assertions: numbers in a report ([`Operand`]), comparisons
//! ([`Op`]), checks ([`Check`]) and their evaluation on a run's JSON report.

use std::fmt;

use serde_json::Value;

use crate::cli::SLOT_BYTES;
use Check::*;
use Op::*;
use Operand::*;

/// The guest's RAM starts at this IPA on QEMU's `virt` layout; disk slot n backs guest page n.
pub(super) const GUEST_RAM_IPA: u64 = 0x4000_0000;

/// A number in a report: a field (JSON pointer into the report), a constant, or derived from
/// the run's vCPU count.
#[derive(Debug, Clone, Copy)]
pub enum Operand {
    Field(&'static str),
    /// A constant times a field.
    Times(i64, &'static str),
    /// The sum of these fields.
    Plus(&'static [&'static str]),
    Int(i64),
    Vcpus,
    VcpusSquared,
    /// This many times the number of secondary vCPUs (`vcpus - 1`).
    SecondariesTimes(i64),
    /// This many times the run's resident memory (`/resident_mib`), in bytes.
    ResidentBytesTimes(i64),
    /// A field plus the number of vCPUs.
    FieldPlusVcpus(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub enum Op {
    Eq,
    Gt,
    Ge,
}

/// One check on a run's report.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    /// The field is the boolean `true`.
    IsTrue(&'static str),
    /// The field is a guest physical address (a `0x...` string or an integer) in one of these
    /// backing-disk slots (slot n: `GUEST_RAM_IPA + n * 4096`).
    InSlots(&'static str, &'static [u64]),
    /// Every element of the array has an address field in one of these slots, and no two
    /// elements are in the same slot.
    EachInSlotsOnce(&'static str, &'static str, &'static [u64]),
    /// The slots of the array's address fields are exactly the numbers of the second array (guest
    /// pages = disk slots), each once.
    SlotsAre(&'static str, &'static str, &'static str),
    /// Compares two numbers.
    Cmp(Operand, Op, Operand),
    /// The array has this many elements.
    Len(&'static str, Operand),
    /// Every element of the array has a numeric field satisfying the comparison.
    Each(&'static str, &'static str, Op, Operand),
    /// The sum of a numeric field over the array satisfies the comparison.
    Sum(&'static str, &'static str, Op, Operand),
    /// The hypervisor printed no more lines (`/console_lines/hyp`) than its fixed ones and what
    /// the diagnostics' rate limit allows for the counts in `/hyp/diagnostics`.
    HypLinesRateLimited,
}

/// A check and the labels of the cases it applies to (empty: every case). A case's labels are
/// its scenario's name, [`EXPECT_OK`](super::cases::EXPECT_OK) unless the guest is meant to fail, and for self-test and
/// paging cases their names and group labels (see `Case::labels`).
#[derive(Debug, Clone, Copy)]
pub struct Assertion {
    pub scenarios: &'static [&'static str],
    pub check: Check,
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Field(p) => write!(f, "{p}"),
            Times(k, p) => write!(f, "{k}*{p}"),
            Plus(fields) => write!(f, "{}", fields.join("+")),
            Int(i) => write!(f, "{i}"),
            Vcpus => write!(f, "vcpus"),
            VcpusSquared => write!(f, "vcpus*vcpus"),
            SecondariesTimes(k) => write!(f, "{k}*(vcpus-1)"),
            ResidentBytesTimes(k) => write!(f, "{k}*/resident_mib MiB"),
            FieldPlusVcpus(p) => write!(f, "{p}+vcpus"),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Eq => "==",
            Gt => ">",
            Ge => ">=",
        })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            IsTrue(p) => write!(f, "{p} == true"),
            InSlots(p, slots) => write!(f, "{p} in disk slots {slots:?}"),
            EachInSlotsOnce(p, k, slots) => write!(f, "every {p}[*].{k} in disk slots {slots:?}, once each"),
            SlotsAre(p, k, q) => write!(f, "the slots of {p}[*].{k} are {q}, once each"),
            Cmp(a, op, b) => write!(f, "{a} {op} {b}"),
            Len(p, n) => write!(f, "len({p}) == {n}"),
            Each(p, k, op, b) => write!(f, "every {p}[*].{k} {op} {b}"),
            Sum(p, k, op, b) => write!(f, "sum({p}[*].{k}) {op} {b}"),
            HypLinesRateLimited => write!(f, "/console_lines/hyp <= the rate limit's bound"),
        }
    }
}

fn as_int(v: &Value) -> Option<i128> {
    v.as_i64().map(i128::from).or_else(|| v.as_u64().map(i128::from))
}

/// The integer at `p`.
fn int_field(report: &Value, p: &str) -> Result<i128, String> {
    match report.pointer(p) {
        None => Err(format!("{p} is missing")),
        Some(v) => as_int(v).ok_or_else(|| format!("{p} is {v}, not an integer")),
    }
}

/// An address at `p`: an integer, or a string as the guest prints them (`0x...`).
fn address_field(report: &Value, p: &str) -> Result<u64, String> {
    let v = report.pointer(p).ok_or_else(|| format!("{p} is missing"))?;
    let parsed = match v {
        Value::String(s) => s.strip_prefix("0x").and_then(|hex| u64::from_str_radix(hex, 16).ok()),
        other => other.as_u64(),
    };
    parsed.ok_or_else(|| format!("{p} is {v}, not an address"))
}

impl Operand {
    pub(super) fn eval(&self, report: &Value, vcpus: u32) -> Result<i128, String> {
        match *self {
            Field(p) => int_field(report, p),
            Times(k, p) => Ok(k as i128 * int_field(report, p)?),
            Plus(fields) => fields.iter().map(|p| int_field(report, p)).sum(),
            Int(i) => Ok(i as i128),
            Vcpus => Ok(vcpus as i128),
            VcpusSquared => Ok(vcpus as i128 * vcpus as i128),
            SecondariesTimes(k) => Ok(k as i128 * (vcpus as i128 - 1)),
            ResidentBytesTimes(k) => Ok(k as i128 * (int_field(report, "/resident_mib")? << 20)),
            FieldPlusVcpus(p) => Ok(int_field(report, p)? + vcpus as i128),
        }
    }
}

impl Op {
    pub(super) fn holds(&self, a: i128, b: i128) -> bool {
        match self {
            Eq => a == b,
            Gt => a > b,
            Ge => a >= b,
        }
    }
}

/// The disk slot of the address at `p`, if it is one of `slots`.
fn in_slots(report: &Value, p: &str, slots: &[u64]) -> Result<u64, String> {
    let addr = address_field(report, p)?;
    let slot = addr.checked_sub(GUEST_RAM_IPA).map(|offset| offset / SLOT_BYTES);
    match slot {
        Some(slot) if slots.contains(&slot) => Ok(slot),
        Some(slot) => Err(format!("{p} = {addr:#x} is in slot {slot}")),
        None => Err(format!("{p} = {addr:#x} is below guest RAM")),
    }
}

pub(super) fn array<'a>(report: &'a Value, p: &str) -> Result<&'a Vec<Value>, String> {
    match report.pointer(p) {
        None => Err(format!("{p} is missing")),
        Some(v) => v.as_array().ok_or_else(|| format!("{p} is {v}, not an array")),
    }
}

impl Check {
    /// Ok, or why the check failed (with the values seen).
    pub fn eval(&self, report: &Value, vcpus: u32) -> Result<(), String> {
        match *self {
            IsTrue(p) => match report.pointer(p) {
                Some(Value::Bool(true)) => Ok(()),
                Some(v) => Err(format!("{p} is {v}")),
                None => Err(format!("{p} is missing")),
            },
            InSlots(p, slots) => in_slots(report, p, slots).map(|_| ()),
            EachInSlotsOnce(p, k, slots) => {
                let mut seen = Vec::new();
                for i in 0..array(report, p)?.len() {
                    let slot = in_slots(report, &format!("{p}/{i}/{k}"), slots)?;
                    if seen.contains(&slot) {
                        return Err(format!("{p}/{i}/{k} is in slot {slot} again"));
                    }
                    seen.push(slot);
                }
                Ok(())
            }
            SlotsAre(p, k, q) => {
                let mut want: Vec<u64> = array(report, q)?
                    .iter()
                    .map(|v| v.as_u64().ok_or_else(|| format!("{q} has {v}, not a page number")))
                    .collect::<Result<_, _>>()?;
                let mut got = Vec::new();
                for i in 0..array(report, p)?.len() {
                    let addr = address_field(report, &format!("{p}/{i}/{k}"))?;
                    let slot =
                        addr.checked_sub(GUEST_RAM_IPA).ok_or_else(|| format!("{p}/{i}/{k} is below guest RAM"))?;
                    got.push(slot / SLOT_BYTES);
                }
                got.sort_unstable();
                want.sort_unstable();
                (got == want).then_some(()).ok_or_else(|| format!("slots {got:?}, {q} {want:?}"))
            }
            Cmp(a, op, b) => {
                let (x, y) = (a.eval(report, vcpus)?, b.eval(report, vcpus)?);
                op.holds(x, y).then_some(()).ok_or_else(|| format!("{a} = {x}, {b} = {y}"))
            }
            Len(p, n) => {
                let (len, want) = (array(report, p)?.len() as i128, n.eval(report, vcpus)?);
                (len == want).then_some(()).ok_or_else(|| format!("{p} has {len} entries, want {want}"))
            }
            Each(p, k, op, b) => {
                let want = b.eval(report, vcpus)?;
                for (i, item) in array(report, p)?.iter().enumerate() {
                    let v = item.get(k).and_then(as_int).ok_or_else(|| format!("{p}/{i}/{k} missing"))?;
                    if !op.holds(v, want) {
                        return Err(format!("{p}/{i}/{k} = {v}"));
                    }
                }
                Ok(())
            }
            Sum(p, k, op, b) => {
                let want = b.eval(report, vcpus)?;
                let mut sum = 0i128;
                for (i, item) in array(report, p)?.iter().enumerate() {
                    sum += item.get(k).and_then(as_int).ok_or_else(|| format!("{p}/{i}/{k} missing"))?;
                }
                op.holds(sum, want).then_some(()).ok_or_else(|| format!("the sum is {sum}"))
            }
            HypLinesRateLimited => {
                let lines = int_field(report, "/console_lines/hyp")?;
                let counts = report
                    .pointer("/hyp/diagnostics")
                    .and_then(Value::as_object)
                    .ok_or("/hyp/diagnostics is missing")?;
                let allowed: u64 = counts.values().filter_map(Value::as_u64).map(crate::soak::printed).sum();
                let bound = i128::from(crate::soak::HYP_FIXED_LINES + allowed);
                (lines <= bound).then_some(()).ok_or_else(|| format!("{lines} lines, the bound is {bound}"))
            }
        }
    }
}
