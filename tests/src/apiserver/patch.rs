//! The three patch types the Kubernetes API accepts from kube-rs clients:
//! JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch.
use serde_json::{Map, Value};

/// Why a patch could not be applied; maps onto the API's status codes.
#[derive(Debug)]
pub enum PatchError {
    /// The body is not a patch of the declared type (400 BadRequest).
    Malformed(String),
    /// The patch is well formed but does not apply, e.g. a failed `test` op
    /// (422 Unprocessable Entity, as the real apiserver answers).
    NotApplicable(String),
    /// Server-side apply and other types this server does not speak (415).
    UnsupportedType(String),
}

/// Applies `body` of the given `Content-Type` to `target`.
pub fn apply(content_type: &str, target: &mut Value, body: &[u8]) -> Result<(), PatchError> {
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(body)
                .map_err(|e| PatchError::Malformed(format!("invalid JSON patch: {e}")))?;
            json_patch::patch(target, &patch).map_err(|e| match e.kind {
                // Worded as the apiserver's JSON-patch library words it.
                json_patch::PatchErrorKind::TestFailed => {
                    PatchError::NotApplicable(format!("testing value {} failed: test failed", e.path))
                }
                _ => PatchError::NotApplicable(e.to_string()),
            })
        }
        "application/merge-patch+json" => {
            let patch: Value = parse_object(body)?;
            json_patch::merge(target, &patch);
            Ok(())
        }
        "application/strategic-merge-patch+json" => {
            let patch: Value = parse_object(body)?;
            strategic_merge(target, &patch, "");
            Ok(())
        }
        other => Err(PatchError::UnsupportedType(other.to_owned())),
    }
}

fn parse_object(body: &[u8]) -> Result<Value, PatchError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| PatchError::Malformed(format!("invalid JSON: {e}")))?;
    if v.is_object() {
        Ok(v)
    } else {
        Err(PatchError::Malformed("a merge patch must be a JSON object".into()))
    }
}

/// Merge keys of the lists that the built-in types declare `patchStrategy:"merge"`
/// on. Every other list (notably `spec.taints`, which is atomic) is replaced whole.
fn merge_key(path: &str) -> Option<&'static str> {
    match path {
        ".status.conditions" | ".status.addresses" => Some("type"),
        ".spec.containers" | ".spec.initContainers" | ".spec.volumes" | ".spec.ephemeralContainers" => {
            Some("name")
        }
        ".metadata.ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Lists of scalars merged as sets (`patchStrategy:"merge"` on a primitive list).
fn is_set_list(path: &str) -> bool {
    path == ".metadata.finalizers"
}

/// Strategic merge patch over the subset of directives kube-rs and kubelet use:
/// maps merge recursively, `null` deletes, keyed lists merge by their merge key,
/// `$patch: delete` removes a keyed item and `$patch: replace` replaces a map.
pub fn strategic_merge(target: &mut Value, patch: &Value, path: &str) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if patch_map.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replaced = patch_map.clone();
        replaced.remove("$patch");
        *target = Value::Object(replaced);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(target_map) = target else { return };
    for (key, value) in patch_map {
        if key.starts_with('$') {
            continue;
        }
        let child = format!("{path}.{key}");
        match value {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Array(items) => {
                if let Some(mk) = merge_key(&child) {
                    let slot = target_map.entry(key.clone()).or_insert_with(|| Value::Array(vec![]));
                    merge_keyed_list(slot, items, mk, &child);
                } else if is_set_list(&child) {
                    let slot = target_map.entry(key.clone()).or_insert_with(|| Value::Array(vec![]));
                    if let Value::Array(existing) = slot {
                        for item in items {
                            if !existing.contains(item) {
                                existing.push(item.clone());
                            }
                        }
                    } else {
                        *slot = value.clone();
                    }
                } else {
                    target_map.insert(key.clone(), value.clone());
                }
            }
            Value::Object(_) => {
                let slot = target_map.entry(key.clone()).or_insert(Value::Null);
                strategic_merge(slot, value, &child);
            }
            _ => {
                target_map.insert(key.clone(), value.clone());
            }
        }
    }
}

fn merge_keyed_list(slot: &mut Value, items: &[Value], merge_key: &str, path: &str) {
    if !slot.is_array() {
        *slot = Value::Array(vec![]);
    }
    let Value::Array(existing) = slot else { return };
    for item in items {
        let key = item.get(merge_key).cloned();
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        let pos = key
            .as_ref()
            .and_then(|k| existing.iter().position(|e| e.get(merge_key) == Some(k)));
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                if let Some(e) = existing.get_mut(i) {
                    strategic_merge(e, item, path);
                }
            }
            (None, false) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item, path);
                existing.push(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_conditions_by_type_and_replaces_taints() {
        let mut node = json!({
            "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}
        });
        let patch = json!({
            "spec": {"taints": [{"key": "b", "effect": "NoExecute"}]},
            "status": {"conditions": [{"type": "KernelPanic", "status": "True"}]}
        });
        strategic_merge(&mut node, &patch, "");
        assert_eq!(node["spec"]["taints"], json!([{"key": "b", "effect": "NoExecute"}]));
        assert_eq!(node["status"]["conditions"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn strategic_delete_directive_removes_keyed_item() {
        let mut pod = json!({"status": {"conditions": [{"type": "A"}, {"type": "B"}]}});
        strategic_merge(&mut pod, &json!({"status": {"conditions": [{"type": "A", "$patch": "delete"}]}}), "");
        assert_eq!(pod["status"]["conditions"], json!([{"type": "B"}]));
    }

    #[test]
    fn failed_test_op_is_not_applicable() {
        let mut obj = json!({"metadata": {"resourceVersion": "5"}});
        let body = br#"[{"op":"test","path":"/metadata/resourceVersion","value":"4"}]"#;
        let err = apply("application/json-patch+json", &mut obj, body);
        assert!(matches!(err, Err(PatchError::NotApplicable(_))), "{err:?}");
    }
}
