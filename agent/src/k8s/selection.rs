//! Which Pods are profiled: namespaces and a Kubernetes label selector.

use std::collections::BTreeMap;

use super::pods::PodMeta;

/// Why a label selector does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("unbalanced parentheses in {selector:?}")]
    Unbalanced { selector: String },
    #[error("empty requirement in {selector:?}")]
    EmptyRequirement { selector: String },
    #[error("invalid label key {key:?}")]
    InvalidKey { key: String },
    #[error("invalid label value {value:?}")]
    InvalidValue { value: String },
    #[error("{requirement:?}: the set must be in parentheses")]
    SetWithoutParentheses { requirement: String },
    #[error("cannot parse requirement {requirement:?}")]
    Unparsable { requirement: String },
}

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    NotExists(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector (`app=web,tier!=db,env in (a,b),!canary`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector(Vec<Requirement>);

fn valid_key(k: &str) -> bool {
    // Optional DNS prefix and '/', then a name of alphanumerics, '-', '_', '.'.
    let name = k.rsplit_once('/').map_or(k, |(prefix, name)| {
        if prefix.is_empty() || prefix.len() > 253 {
            ""
        } else {
            name
        }
    });
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
}

fn valid_value(v: &str) -> bool {
    v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        let unbalanced = || SelectorError::Unbalanced {
            selector: text.to_string(),
        };
        // Split at commas outside parentheses.
        let mut depth = 0i32;
        let mut parts = Vec::new();
        let mut start = 0;
        for (i, c) in text.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&text[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
            if !(0..=1).contains(&depth) {
                return Err(unbalanced());
            }
        }
        if depth != 0 {
            return Err(unbalanced());
        }
        parts.push(&text[start..]);
        for part in parts {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(SelectorError::EmptyRequirement {
                    selector: text.to_string(),
                });
            }
            reqs.push(Self::requirement(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    fn requirement(part: &str) -> Result<Requirement, SelectorError> {
        let key_ok = |k: &str| {
            if valid_key(k) {
                Ok(k.to_string())
            } else {
                Err(SelectorError::InvalidKey { key: k.to_string() })
            }
        };
        let value_ok = |v: &str| {
            let v = v.trim();
            if valid_value(v) {
                Ok(v.to_string())
            } else {
                Err(SelectorError::InvalidValue {
                    value: v.to_string(),
                })
            }
        };
        if let Some(key) = part.strip_prefix('!') {
            return Ok(Requirement::NotExists(key_ok(key.trim())?));
        }
        for (op, negate) in [(" notin ", true), (" in ", false)] {
            if let Some((key, set)) = part.split_once(op) {
                let set = set.trim();
                let inner = set
                    .strip_prefix('(')
                    .and_then(|s| s.strip_suffix(')'))
                    .ok_or_else(|| SelectorError::SetWithoutParentheses {
                        requirement: part.to_string(),
                    })?;
                let values = inner
                    .split(',')
                    .map(value_ok)
                    .collect::<Result<Vec<_>, _>>()?;
                let key = key_ok(key.trim())?;
                return Ok(if negate {
                    Requirement::NotIn(key, values)
                } else {
                    Requirement::In(key, values)
                });
            }
        }
        for (op, negate) in [("!=", true), ("==", false), ("=", false)] {
            if let Some((key, value)) = part.split_once(op) {
                let key = key_ok(key.trim())?;
                let value = value_ok(value)?;
                return Ok(if negate {
                    Requirement::NotEquals(key, value)
                } else {
                    Requirement::Equals(key, value)
                });
            }
        }
        if part.contains([' ', '(', ')', '<', '>']) {
            return Err(SelectorError::Unparsable {
                requirement: part.to_string(),
            });
        }
        Ok(Requirement::Exists(key_ok(part)?))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The configured choice of Pods.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    namespaces: Vec<String>,
    exclude: Vec<String>,
    selector: LabelSelector,
}

impl Selection {
    /// Pods in `namespaces` (empty: any), not in `exclude`, whose labels match `selector`.
    pub fn new(namespaces: Vec<String>, exclude: Vec<String>, selector: LabelSelector) -> Self {
        Selection {
            namespaces,
            exclude,
            selector,
        }
    }

    pub fn selects(&self, pod: &PodMeta) -> bool {
        (self.namespaces.is_empty() || self.namespaces.contains(&pod.namespace))
            && !self.exclude.contains(&pod.namespace)
            && self.selector.matches(&pod.labels)
    }

    /// True when no Pod can be excluded.
    pub fn is_everything(&self) -> bool {
        self.namespaces.is_empty() && self.exclude.is_empty() && self.selector.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors_follow_kubernetes_semantics() {
        let web = labels(&[("app", "web"), ("tier", "front"), ("team", "a")]);
        let db = labels(&[("app", "db"), ("tier", "db")]);
        for (sel, want_web, want_db) in [
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web, api)", true, false),
            ("app notin (web)", false, true),
            ("team", true, false),
            ("!team", false, true),
            ("app in (web,db),tier!=db", true, false),
            ("", true, true),
            ("app.kubernetes.io/name", false, false),
        ] {
            let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            assert_eq!(s.matches(&web), want_web, "{sel} on web");
            assert_eq!(s.matches(&db), want_db, "{sel} on db");
        }
        for bad in [
            "app in web",
            "app in (web",
            "a b",
            "app=we b",
            ",app",
            "=x",
            "app in (a,b))",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn namespaces_include_and_exclude() {
        let pod = |ns: &str| PodMeta {
            namespace: ns.into(),
            ..PodMeta::default()
        };
        let s = Selection::new(
            vec!["shop".into(), "kube-system".into()],
            vec!["kube-system".into()],
            LabelSelector::default(),
        );
        assert!(s.selects(&pod("shop")));
        assert!(!s.selects(&pod("kube-system")));
        assert!(!s.selects(&pod("other")));
        assert!(!s.is_everything());
        assert!(Selection::default().is_everything());
    }
}
