//! Rows from DWARF call frame information (`.eh_frame`, `.debug_frame`), evaluated by gimli.
//!
//! Per row of an FDE's table:
//! - an FDE whose CIE has augmentation `S` (signal trampoline) → [`Cfa::Signal`];
//! - the return address (register 16) undefined → [`Cfa::Undefined`]; at any place other than
//!   CFA-8 → [`Cfa::Unknown`];
//! - CFA = rsp/rbp + n → [`Cfa::Rsp`]/[`Cfa::Rbp`]; the PLT stub expression ld writes →
//!   [`Cfa::Plt`]; any other base register or expression → [`Cfa::Unknown`];
//! - rbp: same value or no rule → [`Rbp::Unchanged`]; saved at CFA+n → [`Rbp::At`]; any other
//!   rule (in a register, an expression) makes the row [`Cfa::Unknown`], since the unwinder
//!   could not restore the caller's rbp.
//!
//! An FDE whose CIE or instructions gimli rejects is skipped whole. gimli's evaluator keeps a
//! bounded state stack (`DW_CFA_remember_state`) and a bounded rule set, so no input makes it
//! recurse or grow without bound.

use gimli::{
    BaseAddresses, CfaRule, EndianSlice, LittleEndian, Reader, RegisterRule, UnwindContext,
    UnwindSection, UnwindTableRow, X86_64,
};

use super::{Builder, Cfa, Rbp, UnwindError, UnwindStats};

type R<'a> = EndianSlice<'a, LittleEndian>;

/// The CFA expression of ld's lazy `.plt` entries (`elf_x86_64_eh_frame_plt`): `DW_OP_breg7 8;
/// DW_OP_breg16 0; DW_OP_lit15; DW_OP_and; DW_OP_lit11; DW_OP_ge; DW_OP_lit3; DW_OP_shl;
/// DW_OP_plus`, i.e. rsp + 8 + ((rip & 15) >= 11) << 3.
const PLT_EXPRESSION: &[u8] = &[
    0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
];

/// Reads every FDE of `section` into `b` (one block each), skipping those an earlier source
/// covers; returns the number of FDEs read.
pub(super) fn collect<'a, S: UnwindSection<R<'a>>>(
    section: &S,
    bases: &BaseAddresses,
    b: &mut Builder,
    stats: &mut UnwindStats,
) -> Result<usize, UnwindError> {
    let mut ctx = UnwindContext::new();
    let mut entries = section.entries(bases);
    let mut fdes = 0;
    loop {
        let partial = match entries.next() {
            Ok(Some(gimli::CieOrFde::Fde(partial))) => partial,
            Ok(Some(gimli::CieOrFde::Cie(_))) => continue,
            Ok(None) => break,
            Err(_) => {
                // An entry's length cannot be trusted: nothing after it can be found.
                stats.sections_truncated += 1;
                break;
            }
        };
        let Ok(fde) = partial.parse(|s, bases, offset| s.cie_from_offset(bases, offset)) else {
            stats.fdes_damaged += 1;
            continue;
        };
        let start = fde.initial_address();
        let Some(end) = start.checked_add(fde.len()).filter(|&e| e > start) else {
            continue;
        };
        fdes += 1;
        if b.covered(start, end) {
            continue;
        }
        let signal = fde.is_signal_trampoline();
        let Ok(mut table) = fde.rows(section, bases, &mut ctx) else {
            stats.fdes_damaged += 1;
            continue;
        };
        b.begin(start, end);
        let mut damaged = false;
        loop {
            match table.next_row() {
                Ok(Some(row)) => {
                    let (cfa, rbp) = if signal {
                        (Cfa::Signal, Rbp::Unchanged)
                    } else {
                        rule(section, row)
                    };
                    b.push(row.start_address(), row.end_address(), cfa, rbp)?;
                }
                Ok(None) => break,
                Err(_) => {
                    damaged = true;
                    break;
                }
            }
        }
        if damaged {
            stats.fdes_damaged += 1;
            b.abandon();
        } else {
            b.end();
        }
    }
    Ok(fdes)
}

/// The CFA and rbp rules of one row.
fn rule<'a, S: UnwindSection<R<'a>>>(section: &S, row: &UnwindTableRow<usize>) -> (Cfa, Rbp) {
    const UNKNOWN: (Cfa, Rbp) = (Cfa::Unknown, Rbp::Unchanged);
    match row.register(X86_64::RA) {
        None | Some(RegisterRule::Undefined) => return (Cfa::Undefined, Rbp::Unchanged),
        Some(RegisterRule::Offset(-8)) => {}
        Some(_) => return UNKNOWN,
    }
    let cfa = match row.cfa() {
        CfaRule::RegisterAndOffset { register, offset } => {
            let Ok(offset) = i32::try_from(*offset) else {
                return UNKNOWN;
            };
            match *register {
                X86_64::RSP => Cfa::Rsp(offset),
                X86_64::RBP => Cfa::Rbp(offset),
                _ => return UNKNOWN,
            }
        }
        CfaRule::Expression(expression) => {
            let is_plt = expression
                .get(section)
                .is_ok_and(|e| e.0.to_slice().is_ok_and(|b| *b == *PLT_EXPRESSION));
            if !is_plt {
                return UNKNOWN;
            }
            Cfa::Plt
        }
    };
    let rbp = match row.register(X86_64::RBP) {
        None | Some(RegisterRule::SameValue) | Some(RegisterRule::Undefined) => Rbp::Unchanged,
        Some(RegisterRule::Offset(n)) => match i32::try_from(n) {
            Ok(n) => Rbp::At(n),
            Err(_) => return UNKNOWN,
        },
        Some(_) => return UNKNOWN,
    };
    (cfa, rbp)
}
