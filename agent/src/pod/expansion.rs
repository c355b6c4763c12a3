//! `$(VAR)` references in env values, command and args, with Kubernetes' exact rules:
//! `$(NAME)` is replaced when NAME is known and kept verbatim otherwise; `$$` is an escaped
//! `$`; a `$` followed by anything else, or an unclosed `$(`, is kept as written.

/// Expand `input` with `lookup`.
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(v) => out.push_str(&v),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // Keep `$` and the character after it (whole, even if multi-byte).
                    let ch = rest.chars().next().map_or(1, char::len_utf8);
                    out.push('$');
                    out.push_str(&rest[..ch]);
                    ch
                }
            };
            cursor += advance + 1;
            checkpoint = cursor;
        } else {
            cursor += 1;
        }
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(s: &str) -> String {
        expand(s, |n| match n {
            "VAR_A" => Some("A".into()),
            "VAR_EMPTY" => Some(String::new()),
            "x" => Some("é".into()),
            _ => None,
        })
    }

    #[test]
    fn kubernetes_expansion_cases() {
        // Cases from Kubernetes' expansion tests.
        assert_eq!(ex("$(VAR_A)"), "A");
        assert_eq!(ex("___$(VAR_A)___"), "___A___");
        assert_eq!(ex("$(VAR_A)$(VAR_A)"), "AA");
        assert_eq!(ex("$(VAR_EMPTY)"), "");
        assert_eq!(ex("$(UNKNOWN)"), "$(UNKNOWN)");
        assert_eq!(ex("$$(VAR_A)"), "$(VAR_A)");
        assert_eq!(ex("$$$(VAR_A)"), "$A");
        assert_eq!(ex("$(VAR_A"), "$(VAR_A");
        assert_eq!(ex("$VAR_A"), "$VAR_A");
        assert_eq!(ex("$"), "$");
        assert_eq!(ex("a$"), "a$");
        assert_eq!(ex("$()"), "$()");
        assert_eq!(ex("$(x)$é"), "é$é");
    }
}
