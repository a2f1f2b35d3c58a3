//! Label and field selectors, as list and watch requests use them.
use serde_json::Value;

#[derive(Debug)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    Exists(String),
    Absent(String),
}

/// A parsed selector: every requirement must hold.
#[derive(Debug, Default)]
pub struct Selector {
    reqs: Vec<Req>,
}

impl Selector {
    /// Parses `a=b,c!=d,e,!f` (`==` is accepted for `=`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let req = if let Some((k, v)) = part.split_once("!=") {
                Req::Ne(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Req::Eq(k.trim().into(), v.trim().into())
            } else if let Some(k) = part.strip_prefix('!') {
                Req::Absent(k.trim().into())
            } else if part.contains(' ') || part.contains('(') {
                return Err(format!("unsupported selector requirement {part:?}"));
            } else {
                Req::Exists(part.into())
            };
            reqs.push(req);
        }
        Ok(Self { reqs })
    }

    /// Label selector: requirements on `metadata.labels`.
    pub fn matches_labels(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels");
        self.reqs.iter().all(|r| {
            let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
            match r {
                Req::Eq(k, v) => get(k) == Some(v.as_str()),
                Req::Ne(k, v) => get(k) != Some(v.as_str()),
                Req::Exists(k) => get(k).is_some(),
                Req::Absent(k) => get(k).is_none(),
            }
        })
    }

    /// Field selector: requirements on dotted paths (`spec.nodeName`); a
    /// missing field compares as the empty string, as in the real server.
    pub fn matches_fields(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| {
            let get = |k: &str| {
                let ptr = format!("/{}", k.replace('.', "/"));
                match obj.pointer(&ptr) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Null) | None => String::new(),
                    Some(other) => other.to_string(),
                }
            };
            match r {
                Req::Eq(k, v) => get(k) == *v,
                Req::Ne(k, v) => get(k) != *v,
                Req::Exists(_) | Req::Absent(_) => false,
            }
        })
    }
}
