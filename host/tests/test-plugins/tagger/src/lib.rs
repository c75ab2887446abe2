//! A test policy: adds the response header `x-plugin-version: <TAGGER_VERSION>` to every
//! virtual host of every route table. Built several times with different versions, it lets
//! hot-reload tests see exactly which version a client's config came from.

use nebucloud_xds_guest::proto::envoy::config::core::v3::{HeaderValue, HeaderValueOption};
use nebucloud_xds_guest::proto::envoy::config::route::v3::RouteConfiguration;
use nebucloud_xds_guest::{export_plugin, Context, Resource, Result};

/// The version stamped by this build.
pub const VERSION: &str = match option_env!("TAGGER_VERSION") {
    Some(v) => v,
    None => "dev",
};

/// The plugin function.
pub fn tag(_ctx: &Context<'_>, resources: Vec<Resource>) -> Result<Vec<Resource>> {
    resources
        .into_iter()
        .map(|r| match r.decode::<RouteConfiguration>()? {
            Some(mut rc) => {
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
                Ok(Resource::new(r.name, &rc))
            }
            None => Ok(r),
        })
        .collect()
}

export_plugin!(tag);
