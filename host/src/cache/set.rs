//! The immutable set of resources one node group is served, grouped by type.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::encodings::Encodings;
use super::resource::{combined_version, Resource};

/// Why a list of resources cannot become a [`ResourceSet`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceSetError {
    /// Two resources of one type share a name: a client could not tell them apart.
    #[error("duplicate resource name {name:?} for type {type_url}")]
    DuplicateName {
        /// The type URL.
        type_url: String,
        /// The name given twice.
        name: String,
    },
    /// A resource has an empty name.
    #[error("a resource of type {type_url} has an empty name")]
    EmptyName {
        /// The type URL.
        type_url: String,
    },
    /// A resource has a type URL that is not `<host>/<message name>`.
    #[error("resource {name:?} has a malformed type URL {type_url:?}")]
    MalformedTypeUrl {
        /// The resource name.
        name: String,
        /// The type URL given.
        type_url: String,
    },
}

/// The resources of one type, by name, with a version that covers all of them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TypeResources {
    resources: BTreeMap<String, Arc<Resource>>,
    version: String,
}

impl TypeResources {
    /// The resource called `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Arc<Resource>> {
        self.resources.get(name)
    }

    /// All resources of this type, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.values()
    }

    /// How many resources of this type there are.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// A content hash over every `(name, version)` of this type.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// Everything one node group is served: per type URL, resources by name.
///
/// Immutable once built and shared by `Arc` between the cache and every stream that serves it,
/// so a thousand nodes of one group cost one copy of the resources.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceSet {
    types: BTreeMap<String, TypeResources>,
    version: String,
    /// What selections of it encode to, made once for every stream that sends them.
    encodings: Encodings,
}

impl Default for ResourceSet {
    fn default() -> Self {
        ResourceSet {
            types: BTreeMap::new(),
            version: combined_version([]),
            encodings: Encodings::default(),
        }
    }
}

impl ResourceSet {
    /// Builds a set, refusing duplicate names within a type, empty names and malformed type
    /// URLs, so that nothing ambiguous ever reaches a client.
    pub fn new(resources: impl IntoIterator<Item = Resource>) -> Result<Self, ResourceSetError> {
        let mut types: BTreeMap<String, BTreeMap<String, Arc<Resource>>> = BTreeMap::new();
        for r in resources {
            if r.name().is_empty() {
                return Err(ResourceSetError::EmptyName {
                    type_url: r.type_url().to_owned(),
                });
            }
            if !is_valid_type_url(r.type_url()) {
                return Err(ResourceSetError::MalformedTypeUrl {
                    name: r.name().to_owned(),
                    type_url: r.type_url().to_owned(),
                });
            }
            let of_type = types.entry(r.type_url().to_owned()).or_default();
            if of_type.contains_key(r.name()) {
                return Err(ResourceSetError::DuplicateName {
                    type_url: r.type_url().to_owned(),
                    name: r.name().to_owned(),
                });
            }
            of_type.insert(r.name().to_owned(), Arc::new(r));
        }
        let types: BTreeMap<String, TypeResources> = types
            .into_iter()
            .map(|(type_url, resources)| {
                let version = combined_version(resources.values().map(|r| (r.name(), r.version())));
                (type_url, TypeResources { resources, version })
            })
            .collect();
        let version = combined_version(types.iter().map(|(t, r)| (t.as_str(), r.version())));
        let encodings = Encodings::for_set(types.values().flat_map(TypeResources::iter));
        Ok(ResourceSet {
            types,
            version,
            encodings,
        })
    }

    /// The resources of one type, if the set has any.
    pub fn of_type(&self, type_url: &str) -> Option<&TypeResources> {
        self.types.get(type_url)
    }

    /// One resource by type and name.
    pub fn get(&self, type_url: &str, name: &str) -> Option<&Arc<Resource>> {
        self.types.get(type_url).and_then(|t| t.get(name))
    }

    /// The type URLs present, in order.
    pub fn type_urls(&self) -> impl Iterator<Item = &str> {
        self.types.keys().map(String::as_str)
    }

    /// Every resource, by type then name.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.types.values().flat_map(TypeResources::iter)
    }

    /// How many resources the set holds in all.
    pub fn len(&self) -> usize {
        self.types.values().map(TypeResources::len).sum()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }

    /// A content hash over the whole set: equal sets have equal versions.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What selections of this set encode to on the wire (see `encodings`).
    pub(crate) fn encodings(&self) -> &Encodings {
        &self.encodings
    }
}

/// A type URL is `<host>/<fully qualified message name>`, as `google.protobuf.Any` requires.
pub(crate) fn is_valid_type_url(type_url: &str) -> bool {
    match type_url.rsplit_once('/') {
        Some((_, message)) => !message.is_empty() && !message.contains(char::is_whitespace),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "type.googleapis.com/test.A";

    #[test]
    fn duplicate_names_within_a_type_are_refused() {
        let err = ResourceSet::new([
            Resource::new(T, "x", vec![1]),
            Resource::new(T, "x", vec![2]),
        ]);
        assert_eq!(
            err,
            Err(ResourceSetError::DuplicateName {
                type_url: T.into(),
                name: "x".into()
            })
        );
    }

    #[test]
    fn same_name_in_two_types_is_fine() {
        let set = ResourceSet::new([
            Resource::new(T, "x", vec![1]),
            Resource::new("type.googleapis.com/test.B", "x", vec![1]),
        ]);
        assert_eq!(set.map(|s| s.len()), Ok(2));
    }

    #[test]
    fn empty_names_and_bad_type_urls_are_refused() {
        assert!(matches!(
            ResourceSet::new([Resource::new(T, "", vec![])]),
            Err(ResourceSetError::EmptyName { .. })
        ));
        assert!(matches!(
            ResourceSet::new([Resource::new("Cluster", "a", vec![])]),
            Err(ResourceSetError::MalformedTypeUrl { .. })
        ));
    }

    #[test]
    fn set_version_is_order_independent_and_content_sensitive() {
        let a = ResourceSet::new([
            Resource::new(T, "a", vec![1]),
            Resource::new(T, "b", vec![2]),
        ]);
        let b = ResourceSet::new([
            Resource::new(T, "b", vec![2]),
            Resource::new(T, "a", vec![1]),
        ]);
        let c = ResourceSet::new([
            Resource::new(T, "b", vec![3]),
            Resource::new(T, "a", vec![1]),
        ]);
        let (a, b, c) = (a.ok(), b.ok(), c.ok());
        assert_eq!(
            a.as_ref().map(|s| s.version()),
            b.as_ref().map(|s| s.version())
        );
        assert_ne!(
            a.as_ref().map(|s| s.version()),
            c.as_ref().map(|s| s.version())
        );
    }
}
