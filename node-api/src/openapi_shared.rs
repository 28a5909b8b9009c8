//! What every modvisor OpenAPI document gets after utoipa has collected it: problem
//! responses that several operations answer with are declared once, under
//! `components.responses`, and referred to; timestamps are a `Timestamp` schema
//! (`date-time`) rather than a bare `String`; every schema has an example, made by
//! serializing a real value of its type (so that it is what the API sends).

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// A problem response several operations share: its name under `components.responses`,
/// its status and its description (how operations declare it).
pub struct SharedProblem {
    /// Name under `components.responses`.
    pub name: &'static str,
    /// HTTP status.
    pub status: &'static str,
    /// Description, as operations give it.
    pub description: &'static str,
}

impl SharedProblem {
    /// Problem `name`: `status` with `description`.
    pub const fn new(name: &'static str, status: &'static str, description: &'static str) -> Self {
        SharedProblem {
            name,
            status,
            description,
        }
    }
}

/// Examples of schemas, by schema name.
pub type Examples = BTreeMap<&'static str, Value>;

/// The methods an OpenAPI path item may hold operations under.
const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn is_problem(r: &Value) -> bool {
    r.get("content")
        .and_then(Value::as_object)
        .is_some_and(|c| c.len() == 1 && c.contains_key("application/problem+json"))
}

/// Every operation's `responses` object.
fn responses_of(doc: &mut Value) -> Vec<&mut Map<String, Value>> {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return Vec::new();
    };
    paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| {
            item.iter_mut()
                .filter(|(m, _)| METHODS.contains(&m.as_str()))
                .filter_map(|(_, op)| op.get_mut("responses").and_then(Value::as_object_mut))
        })
        .collect()
}

/// Finishes a collected document (as JSON): shares `shared`, names timestamps and adds
/// `examples`.
pub fn finish(doc: &mut Value, shared: &[SharedProblem], examples: &Examples) {
    share_problem_responses(doc, shared);
    name_timestamps(doc);
    add_examples(doc, examples);
}

/// Moves each of `shared` that operations answer with under `components.responses` and
/// makes those operations refer to it.
fn share_problem_responses(doc: &mut Value, shared: &[SharedProblem]) {
    let mut declared = Map::new();
    for responses in responses_of(doc) {
        for (status, r) in responses.iter_mut() {
            let description = r.get("description").and_then(Value::as_str);
            let Some(s) = shared.iter().find(|s| {
                s.status == status && Some(s.description) == description && is_problem(r)
            }) else {
                continue;
            };
            declared
                .entry(s.name.to_string())
                .or_insert_with(|| r.clone());
            *r = json!({ "$ref": format!("#/components/responses/{}", s.name) });
        }
    }
    if declared.is_empty() {
        return;
    }
    if let Some(components) = doc.get_mut("components").and_then(Value::as_object_mut) {
        let responses = components
            .entry("responses")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(r) = responses.as_object_mut() {
            r.extend(declared);
        }
    }
}

/// utoipa names the `Timestamp` alias of `String` `String`: it becomes `Timestamp`, an
/// RFC 3339 `date-time`, and every reference follows.
fn name_timestamps(doc: &mut Value) {
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if schemas.remove("String").is_none() {
        return;
    }
    schemas.insert(
        "Timestamp".into(),
        json!({"type": "string", "format": "date-time", "description": "A time, RFC 3339 in UTC."}),
    );
    fn rewrite(v: &mut Value) {
        match v {
            Value::Object(o) => {
                for (k, x) in o.iter_mut() {
                    if k == "$ref" && x == "#/components/schemas/String" {
                        *x = json!("#/components/schemas/Timestamp");
                    } else {
                        rewrite(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(rewrite),
            _ => {}
        }
    }
    rewrite(doc);
}

/// Sets the examples of each schema named in `examples` that has none.
fn add_examples(doc: &mut Value, examples: &Examples) {
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (name, schema) in schemas.iter_mut() {
        let Some(example) = examples.get(name.as_str()) else {
            continue;
        };
        if let Some(o) = schema.as_object_mut() {
            o.entry("examples")
                .or_insert_with(|| Value::Array(vec![example.clone()]));
        }
    }
}

/// The problem responses (status, description) that two or more operations still
/// declare inline: each should be a [`SharedProblem`].
pub fn repeated_inline_problems(doc: &mut Value) -> Vec<(String, String)> {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for responses in responses_of(doc) {
        for (status, r) in responses.iter() {
            if is_problem(r) {
                let d = r.get("description").and_then(Value::as_str).unwrap_or("");
                *seen.entry((status.clone(), d.to_string())).or_default() += 1;
            }
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(k, _)| k)
        .collect()
}

/// The schemas of `doc` without examples.
pub fn schemas_without_examples(doc: &Value) -> Vec<String> {
    match doc
        .pointer("/components/schemas")
        .and_then(Value::as_object)
    {
        None => Vec::new(),
        Some(schemas) => schemas
            .iter()
            .filter(|(_, s)| s.get("examples").is_none())
            .map(|(n, _)| n.clone())
            .collect(),
    }
}

/// Serializes `value` as the example of schema `name` into `out`.
pub fn example<T: serde::Serialize>(
    out: &mut Examples,
    name: &'static str,
    value: &T,
) -> Result<(), serde_json::Error> {
    out.insert(name, serde_json::to_value(value)?);
    Ok(())
}

/// A collected document, finished ([`finish`]) and as pretty JSON with a final newline
/// (how the documents are committed). A failure shows as the document's only content.
pub fn finished(
    doc: &utoipa::openapi::OpenApi,
    shared: &[SharedProblem],
    examples: Result<Examples, serde_json::Error>,
) -> String {
    let done = examples.and_then(|examples| {
        let mut v = serde_json::to_value(doc)?;
        finish(&mut v, shared, &examples);
        serde_json::to_string_pretty(&v)
    });
    let mut s = done.unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    s.push('\n');
    s
}
