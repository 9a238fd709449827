//! A reader for the one-line, flat JSON objects `scripts/bench_reference.py` prints: string,
//! number, boolean and null values, and lists of numbers. Nothing nested; enough for the
//! reference protocol without a JSON dependency.

use std::collections::BTreeMap;

/// One value of a flat object.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
    Nums(Vec<f64>),
}

/// A parsed object; keys in sorted order.
pub type Object = BTreeMap<String, Value>;

/// Parses `{"key": value, ...}`; an error names what was expected where.
pub fn parse(text: &str) -> Result<Object, String> {
    let mut p = Parser { s: text.as_bytes(), i: 0 };
    let mut obj = Object::new();
    p.expect(b'{')?;
    if !p.eat(b'}') {
        loop {
            let key = p.string()?;
            p.expect(b':')?;
            let value = p.value()?;
            obj.insert(key, value);
            if p.eat(b'}') {
                break;
            }
            p.expect(b',')?;
        }
    }
    p.skip_ws();
    if p.i != p.s.len() {
        return Err(p.error("end of line"));
    }
    Ok(obj)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn error(&self, want: &str) -> String {
        format!("expected {want} at byte {} of the reference's output", self.i)
    }

    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        let hit = self.s.get(self.i) == Some(&c);
        self.i += hit as usize;
        hit
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(&format!("`{}`", c as char)))
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_ws();
        match self.s.get(self.i) {
            Some(b'"') => self.string().map(Value::Str),
            Some(b'[') => {
                self.i += 1;
                let mut v = Vec::new();
                if !self.eat(b']') {
                    loop {
                        v.push(self.number()?);
                        if self.eat(b']') {
                            break;
                        }
                        self.expect(b',')?;
                    }
                }
                Ok(Value::Nums(v))
            }
            _ => {
                for (word, v) in [("true", Value::Bool(true)), ("false", Value::Bool(false)), ("null", Value::Null)] {
                    if self.s[self.i..].starts_with(word.as_bytes()) {
                        self.i += word.len();
                        return Ok(v);
                    }
                }
                self.number().map(Value::Num)
            }
        }
    }

    fn number(&mut self) -> Result<f64, String> {
        self.skip_ws();
        let start = self.i;
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_digit() || b"+-.eE".contains(c)) {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i]).ok().and_then(|t| t.parse().ok()).ok_or_else(|| {
            self.i = start;
            self.error("a number")
        })
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.i) else { return Err(self.error("a closing `\"`")) };
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let Some(&e) = self.s.get(self.i) else { return Err(self.error("an escape")) };
                    self.i += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b't' => out.push(b'\t'),
                        b'r' => out.push(b'\r'),
                        b'u' => {
                            // \u plus four hex digits (Python's json.dumps escapes all non-ASCII this way).
                            let hex = self.s.get(self.i..self.i + 4).and_then(|h| std::str::from_utf8(h).ok());
                            let ch = hex.and_then(|h| u32::from_str_radix(h, 16).ok()).and_then(char::from_u32);
                            let ch = ch.unwrap_or(char::REPLACEMENT_CHARACTER);
                            self.i += 4;
                            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
                        }
                        other => out.push(other), // \" \\ \/
                    }
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| self.error("UTF-8 text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_lines() {
        let o = parse(r#"{"op": "matmul", "m": 64, "times_s": [0.5, 1e-3], "numpy": true, "x": null}"#).unwrap();
        assert_eq!(o["op"], Value::Str("matmul".into()));
        assert_eq!(o["m"], Value::Num(64.0));
        assert_eq!(o["times_s"], Value::Nums(vec![0.5, 1e-3]));
        assert_eq!(o["numpy"], Value::Bool(true));
        assert_eq!(o["x"], Value::Null);
        assert_eq!(
            parse(r#"{"e": "No module named \"numpy\" \u00e9"}"#).unwrap()["e"],
            Value::Str("No module named \"numpy\" é".into())
        );
        assert_eq!(parse("{}").unwrap().len(), 0);
        assert!(parse(r#"{"a": 1"#).is_err());
        assert!(parse(r#"{"a": [1, "x"]}"#).is_err());
    }
}
