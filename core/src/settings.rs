//! The values the operator chooses that the core acts on: which endpoint, where a field comes
//! from, which orders a filter skips. The application's config builds these; the core never
//! reads the config.

/// Which impact API the conversions go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    /// `POST /Mediapartners/{SID}/PartnerConversions`
    Partner,
    /// `POST /Advertisers/{SID}/Conversions`
    Brand,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Partner => "partner",
            Endpoint::Brand => "brand",
        }
    }
}

/// Where a mapped API field takes its value from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A CSV column by header name, or a JSON path (`a.b`, `line_items[].sku`).
    Column(String),
    /// The same value for every row.
    Value(String),
}

/// `[[filter]]`: skip orders by a column's value.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FilterConfig {
    pub column: String,
    pub skip: Vec<String>,
    pub when_present: bool,
    /// `level = "row"`: skip single rows instead of whole orders.
    #[serde(rename = "level", serialize_with = "level_name")]
    pub rows: bool,
}

fn level_name<S: serde::Serializer>(rows: &bool, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if *rows { "row" } else { "order" })
}
