//! A test policy: adds the response header `x-plugin-version: <TAGGER_VERSION>` to every
//! virtual host of every route table. Built several times with different versions, it lets
//! hot-reload tests see exactly which version a client's config came from. With the config
//! `{"clusters": true}` it also stamps the version on every cluster's metadata
//! (`filter_metadata["tagger"]["version"]`), so that a reload changes clusters too: the
//! author's-loop benchmark times a cluster change that way.

use nebucloud_xds_guest::proto::envoy::config::cluster::v3::Cluster;
use nebucloud_xds_guest::proto::envoy::config::core::v3::{
    HeaderValue, HeaderValueOption, Metadata,
};
use nebucloud_xds_guest::proto::envoy::config::route::v3::RouteConfiguration;
use nebucloud_xds_guest::proto::google::protobuf::{value::Kind, Struct, Value};
use nebucloud_xds_guest::serde::Deserialize;
use nebucloud_xds_guest::{export_plugin, Context, Resource, Result};

/// The version stamped by this build.
pub const VERSION: &str = match option_env!("TAGGER_VERSION") {
    Some(v) => v,
    None => "dev",
};

/// The plugin's `config` table.
#[derive(Debug, Default, Deserialize)]
#[serde(crate = "nebucloud_xds_guest::serde", deny_unknown_fields)]
pub struct Config {
    /// Stamp clusters too, not only route tables.
    #[serde(default)]
    pub clusters: bool,
}

/// The plugin function.
pub fn tag(_ctx: &Context<'_>, config: &Config, resources: Vec<Resource>) -> Result<Vec<Resource>> {
    resources
        .into_iter()
        .map(|r| {
            if let Some(mut rc) = r.decode::<RouteConfiguration>()? {
                for vh in &mut rc.virtual_hosts {
                    vh.response_headers_to_add.push(HeaderValueOption {
                        header: Some(HeaderValue {
                            key: "x-plugin-version".into(),
                            value: VERSION.into(),
                            ..HeaderValue::default()
                        }),
                        ..HeaderValueOption::default()
                    });
                }
                return Ok(Resource::new(r.name, &rc));
            }
            if config.clusters {
                if let Some(mut cluster) = r.decode::<Cluster>()? {
                    let version = Value {
                        kind: Some(Kind::StringValue(VERSION.into())),
                    };
                    let stamp = Struct {
                        fields: [("version".to_owned(), version)].into_iter().collect(),
                    };
                    cluster
                        .metadata
                        .get_or_insert_with(Metadata::default)
                        .filter_metadata
                        .insert("tagger".into(), stamp);
                    return Ok(Resource::new(r.name, &cluster));
                }
            }
            Ok(r)
        })
        .collect()
}

export_plugin!(tag, config = Config);
