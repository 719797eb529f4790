//! The field catalog (`model`) against impact's two published OpenAPI documents: every field
//! each endpoint defines, its type and its length, with template names expanded. Reads the
//! project's copies in `../shared/docs/specs/` when they are there (and checks the bundled
//! copies in `core/specs/` are the same), the bundled copies otherwise.

use std::collections::BTreeSet;
use std::path::PathBuf;

use impact_drop_core::contract::{read_spec, Spec, Type};
use impact_drop_core::model::{Field, Kind, Level};
use impact_drop_core::settings::Endpoint;

fn load(file: &str, bundled: &str, endpoint: &str) -> Spec {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/docs/specs")
        .join(file);
    let text = match std::fs::read_to_string(&shared) {
        Ok(text) => {
            assert_eq!(
                text,
                bundled,
                "core/specs/{file} differs from {}",
                shared.display()
            );
            text
        }
        Err(_) => bundled.to_owned(),
    };
    read_spec(&text, endpoint).unwrap()
}

/// The catalog's name of a field as the spec reader names it.
fn catalog(endpoint: Endpoint) -> BTreeSet<String> {
    Field::all()
        .filter(|f| f.defined_on(endpoint))
        .map(|f| f.name().to_owned())
        .collect()
}

fn type_agrees(kind: Kind, ty: Type) -> bool {
    match ty {
        Type::Integer => kind == Kind::Int,
        Type::Decimal => matches!(kind, Kind::Money | Kind::Decimal),
        Type::Boolean => kind == Kind::Bool,
        Type::DateTime => kind == Kind::Date,
        Type::Uri => kind == Kind::Url,
        Type::String => matches!(
            kind,
            Kind::Text(_)
                | Kind::Currency
                | Kind::Country
                | Kind::HashedEmail
                | Kind::Digits(..)
                | Kind::OneOf(_)
        ),
    }
}

fn agree(endpoint: Endpoint, spec: &Spec) {
    let specced: BTreeSet<String> = spec.fields.iter().map(|f| f.name.clone()).collect();
    let ours = catalog(endpoint);
    let missing: Vec<_> = specced.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&specced).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{endpoint:?}: the spec defines {missing:?} and the catalog does not; the catalog \
         defines {extra:?} and the spec does not"
    );
    for f in &spec.fields {
        let field = Field::lookup(&f.name).unwrap();
        assert_eq!(field.name(), f.name);
        assert_eq!(field.level() == Level::Item, f.item, "{}: level", f.name);
        assert!(
            type_agrees(field.kind(), f.ty),
            "{endpoint:?} {}: the catalog says {:?}, the spec {:?}",
            f.name,
            field.kind(),
            f.ty
        );
        if let Some(max) = f.max_length {
            assert_eq!(
                field.limit(endpoint),
                Some(max),
                "{endpoint:?} {}: length",
                f.name
            );
        }
    }
}

#[test]
fn the_catalog_is_the_partner_spec() {
    let spec = load(
        "impact-partner-conversions-v16.yaml",
        impact_drop_core::contract::PARTNER_SPEC,
        "partner",
    );
    assert_eq!(spec.fields.len(), 43 - 5 + 15 + 3 + 10 + 3 + 50);
    agree(Endpoint::Partner, &spec);
}

#[test]
fn the_catalog_is_the_brand_spec() {
    let spec = load(
        "impact-brand-conversions-v14.yaml",
        impact_drop_core::contract::BRAND_SPEC,
        "brand",
    );
    agree(Endpoint::Brand, &spec);
    let keys = spec.required.last().unwrap();
    assert_eq!(
        keys.iter().map(String::as_str).collect::<Vec<_>>(),
        impact_drop_core::validate::ATTRIBUTION_KEYS.to_vec()
    );
}

/// The README's "Fields" section is the catalog: `UPDATE_README=1` rewrites it.
#[test]
fn the_readme_lists_the_catalog() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let (start, end) = ("<!-- fields:start -->\n", "<!-- fields:end -->");
    let a = readme
        .find(start)
        .expect("the README's fields:start marker")
        + start.len();
    let b = readme.find(end).expect("the README's fields:end marker");
    let table = impact_drop_core::model::fields_markdown();
    if readme[a..b] != table {
        if std::env::var_os("UPDATE_README").is_some() {
            std::fs::write(&path, format!("{}{table}{}", &readme[..a], &readme[b..])).unwrap();
        } else {
            panic!("README.md's Fields section is not the catalog; run UPDATE_README=1 cargo test -p impact-drop-core --test catalog_vs_spec");
        }
    }
}
