//! What a label may hold: plain text, safe as an MQTT topic level and in markup.

/// The longest label, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

/// ASCII punctuation a label may not hold: MQTT topic levels and wildcards (`/`, `+`, `#`), and
/// markup and quoting (`<`, `>`, `"`, `` ` ``, `\\`).
pub const LABEL_REFUSED: &str = "/+#<>\"`\\";

/// Whether `c` is invisible or not text: format characters (soft hyphen, zero-width and
/// direction marks, bidirectional overrides, BOM, tags), private use and noncharacters.
fn invisible(c: char) -> bool {
    let u = c as u32;
    matches!(
        u,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xE000..=0xF8FF
            | 0xFDD0..=0xFDEF
            | 0xE0000..=0xE007F
            | 0xF0000..
    ) || u & 0xFFFE == 0xFFFE
}

/// Checks one label: 1 to [`MAX_LABEL_CHARS`] characters; ASCII letters, digits, the space and
/// ASCII punctuation other than [`LABEL_REFUSED`], and any other character that is printed
/// (letters and marks of any script, symbols) but no control, other space or line separator,
/// or invisible formatting character; no leading or trailing space. So a label is plain text,
/// safe as an MQTT topic level and in Home Assistant entities. The reason names the character.
pub fn check_label(label: &str) -> core::result::Result<(), String> {
    let n = label.chars().count();
    if n == 0 {
        return Err("is empty: give every class a name".into());
    }
    if n > MAX_LABEL_CHARS {
        return Err(format!("{label:?} has {n} characters; at most {MAX_LABEL_CHARS}"));
    }
    if label.starts_with(' ') || label.ends_with(' ') {
        return Err(format!("{label:?} starts or ends with a space"));
    }
    let allowed = |c: char| {
        if c.is_ascii() {
            c.is_ascii_alphanumeric() || c == ' ' || (c.is_ascii_punctuation() && !LABEL_REFUSED.contains(c))
        } else {
            !(c.is_control() || c.is_whitespace() || invisible(c))
        }
    };
    if let Some((at, c)) = label.chars().enumerate().find(|&(_, c)| !allowed(c)) {
        return Err(format!(
            "{label:?} has {c:?} (character {}): a label holds letters, digits, spaces and ASCII punctuation except {}",
            at + 1,
            LABEL_REFUSED.chars().map(|c| format!("`{c}`")).collect::<Vec<_>>().join(" ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::DIGITS;
    use super::super::Manifest;
    use super::*;
    use std::path::Path;

    #[test]
    fn labels_are_plain_text_safe_in_topics_and_markup() {
        for ok in [
            "0",
            "_silence_",
            "traffic light",
            "jack-o'-lantern",
            "tench, Tinca tinca",
            "chat",
            "猫",
            "año",
            "हिन्दी",
            "🐱",
        ] {
            assert!(check_label(ok).is_ok(), "{ok}");
        }
        for (bad, says) in [
            ("<img src=x onerror=alert(1)>", "'<'"),
            ("a/b", "'/'"),
            ("a+", "'+'"),
            ("#1", "'#'"),
            ("a\0b", "'\\0'"),
            ("tab\there", "'\\t'"),
            ("rtl\u{202e}", "character 4"),
            ("zero\u{200b}width", "character 5"),
            ("q\"", "'\"'"),
            ("nb\u{a0}sp", "character 3"),
            ("", "empty"),
            (" pad", "space"),
        ] {
            let e = check_label(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(check_label(&"x".repeat(64)).is_ok());
        assert!(check_label(&"x".repeat(65)).unwrap_err().contains("at most 64"));
        let text = DIGITS.replace("\"1\"", "\"<img src=x onerror=alert(1)>\"");
        let e = Manifest::from_toml(&text, Path::new("evil.onnx")).unwrap_err().to_string();
        assert!(e.contains("evil.onnx") && e.contains("labels[1]") && e.contains("'<'"), "{e}");
    }
}
