//! What a guest's console output may look like on the host console.
//!
//! The guest's bytes reach the host terminal and the runner, which tells the hypervisor's lines
//! from the guest's by their prefix (`[hyp] ` / `[guest] `). The emulated UART cuts the guest's
//! output into lines at `\n` and prints each after the `[guest] ` prefix; [`GuestText`] then
//! makes sure that what follows the prefix cannot start a new line or drive the terminal: every
//! control character (C0 including `\r`, DEL, C1) and every byte that is not UTF-8 is shown as a
//! `\xNN` escape, and a literal backslash as `\\`, so that the escaped text is unambiguous.

use core::fmt::{self, Write};

/// A guest console line (without its `\n`), displayed safely.
pub struct GuestText<'a>(pub &'a [u8]);

impl fmt::Display for GuestText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\t' => f.write_char('\t')?,
                    c if c.is_control() => escape_char(f, c)?,
                    c => f.write_char(c)?,
                }
            }
            for byte in chunk.invalid() {
                write!(f, "\\x{byte:02x}")?;
            }
        }
        Ok(())
    }
}

/// `\xNN` for a C0 control or DEL, `\u{NN}` for a C1 control.
fn escape_char(f: &mut fmt::Formatter<'_>, c: char) -> fmt::Result {
    if (c as u32) < 0x80 {
        write!(f, "\\x{:02x}", c as u32)
    } else {
        write!(f, "\\u{{{:x}}}", c as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use proptest::prelude::*;

    fn show(bytes: &[u8]) -> String {
        GuestText(bytes).to_string()
    }

    #[test]
    fn printable_text_is_unchanged() {
        assert_eq!(show(b"task 3: ok {\"a\": 1}\tdone"), "task 3: ok {\"a\": 1}\tdone");
        assert_eq!(show("gr\u{fc}n \u{2713}".as_bytes()), "gr\u{fc}n \u{2713}");
    }

    #[test]
    fn controls_and_bad_bytes_are_escaped() {
        assert_eq!(show(b"a\rb"), "a\\x0db");
        assert_eq!(show(b"\x1b[2J[hyp] @exit 0"), "\\x1b[2J[hyp] @exit 0");
        assert_eq!(show(b"\x7f\x00"), "\\x7f\\x00");
        assert_eq!(show(b"x\xff\xc3y"), "x\\xff\\xc3y");
        assert_eq!(show("\u{9b}2J".as_bytes()), "\\u{9b}2J");
        assert_eq!(show(b"back\\slash"), "back\\\\slash");
    }

    proptest! {
        /// Whatever the guest writes, the shown text has no control character (so no line
        /// break and no terminal command) other than tab.
        #[test]
        fn no_control_characters_survive(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let shown = show(&bytes);
            prop_assert!(shown.chars().all(|c| c == '\t' || !c.is_control()), "{shown:?}");
        }

        /// Text without controls or backslashes is shown as it is.
        #[test]
        fn plain_text_round_trips(text in "[^\\p{Cc}\\\\]{0,80}") {
            prop_assert_eq!(show(text.as_bytes()), text);
        }

        /// Different lines stay different (the escaping is injective).
        #[test]
        fn escaping_is_injective(a in proptest::collection::vec(any::<u8>(), 0..24),
                                 b in proptest::collection::vec(any::<u8>(), 0..24)) {
            prop_assume!(a != b);
            prop_assert_ne!(show(&a), show(&b));
        }
    }

    #[test]
    fn long_lines_stay_one_line() {
        let bytes: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        assert!(!show(&bytes).contains('\n'));
    }
}
