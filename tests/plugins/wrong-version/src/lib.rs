//! Built against `diagmon:egress@0.2.0` (a copy of the WIT with only the version changed):
//! loading it into a 0.1 host must fail, naming both versions.

wit_bindgen::generate!({ path: "wit", world: "egress-provider" });

use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};

struct Component;

impl Guest for Component {
    type Upload = Nothing;
    fn configure(_settings: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }
    fn begin(_artifact: Artifact) -> Result<Upload, Error> {
        Ok(Upload::new(Nothing))
    }
}

struct Nothing;

impl GuestUpload for Nothing {
    fn write(&self, _chunk: Vec<u8>) -> Result<(), Error> {
        Ok(())
    }
    fn finish(_this: Upload) -> Result<EgressResult, Error> {
        Ok(EgressResult {
            location: String::new(),
        })
    }
    fn abort(_this: Upload) -> Result<(), Error> {
        Ok(())
    }
}

export!(Component);
