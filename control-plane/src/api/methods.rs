//! Which methods each route takes, from the same registrations that document it: a
//! request to a known path with another method is 405 with `Allow`, not 404.

use utoipa::openapi::path::PathItem;
use utoipa::openapi::OpenApi;

/// The path templates of one listener and the methods of each.
#[derive(Debug, Clone, Default)]
pub struct MethodTable {
    routes: Vec<(Vec<Segment>, Vec<&'static str>)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Parameter,
}

fn methods_of(item: &PathItem) -> Vec<&'static str> {
    [
        ("GET", item.get.is_some()),
        ("HEAD", item.head.is_some()),
        ("POST", item.post.is_some()),
        ("PUT", item.put.is_some()),
        ("PATCH", item.patch.is_some()),
        ("DELETE", item.delete.is_some()),
        ("OPTIONS", item.options.is_some()),
        ("TRACE", item.trace.is_some()),
    ]
    .into_iter()
    .filter_map(|(m, present)| present.then_some(m))
    .collect()
}

fn segments(template: &str) -> Vec<Segment> {
    template
        .split('/')
        .map(|s| {
            if s.starts_with('{') && s.ends_with('}') {
                Segment::Parameter
            } else {
                Segment::Literal(s.to_string())
            }
        })
        .collect()
}

impl MethodTable {
    /// The paths of `doc` and, beside them, `extra` routes it does not document.
    pub fn new(doc: &OpenApi, extra: &[(&str, &'static str)]) -> Self {
        let mut table = MethodTable::default();
        for (template, item) in &doc.paths.paths {
            table.add(template, &methods_of(item));
        }
        for (template, method) in extra {
            table.add(template, &[method]);
        }
        table
    }

    /// One route alone.
    pub fn only(template: &str, method: &'static str) -> Self {
        let mut table = MethodTable::default();
        table.add(template, &[method]);
        table
    }

    fn add(&mut self, template: &str, methods: &[&'static str]) {
        let segs = segments(template);
        match self.routes.iter_mut().find(|(s, _)| *s == segs) {
            Some((_, known)) => {
                for m in methods {
                    if !known.contains(m) {
                        known.push(m);
                    }
                }
            }
            None => self.routes.push((segs, methods.to_vec())),
        }
    }

    /// The methods `path` takes (empty when no route has that path).
    pub fn allowed(&self, path: &str) -> Vec<&'static str> {
        let parts: Vec<&str> = path.split('/').collect();
        let mut out: Vec<&'static str> = Vec::new();
        for (segs, methods) in &self.routes {
            let fits = segs.len() == parts.len()
                && segs.iter().zip(&parts).all(|(s, p)| match s {
                    Segment::Literal(l) => l == p,
                    Segment::Parameter => !p.is_empty(),
                });
            if fits {
                for m in methods {
                    if !out.contains(m) {
                        out.push(m);
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> MethodTable {
        crate::api::public_methods()
    }

    #[test]
    fn known_paths_give_their_methods() {
        let t = table();
        assert_eq!(t.allowed("/v1/vms"), ["GET", "POST"]);
        let one = t.allowed("/v1/vms/0b6f2a52-2d8a-4ea8-9f4e-1b8d7e1a9c10");
        for m in ["GET", "PUT", "DELETE"] {
            assert!(one.contains(&m), "{one:?}");
        }
        assert!(!one.contains(&"PATCH"));
        assert_eq!(t.allowed("/"), ["GET"]);
    }

    #[test]
    fn unknown_paths_give_none() {
        let t = table();
        for path in ["/v1/nothing", "/v1/vms/x/y/z/w", "/v1/vms/", "/v2/vms"] {
            assert!(t.allowed(path).is_empty(), "{path}");
        }
    }
}
