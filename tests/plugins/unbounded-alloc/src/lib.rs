//! Accepts `begin`, then keeps every chunk it gets plus 1 MiB more per loop, forever: the host's
//! memory limit must stop it.

use std::cell::RefCell;

wit_bindgen::generate!({ path: "../../../wit/diagmon-egress@0.1.0", world: "egress-provider" });

use diagmon::egress::types::{Artifact, EgressResult, Error};
use exports::diagmon::egress::provider::{Guest, GuestUpload, Upload};

struct Component;

impl Guest for Component {
    type Upload = Hoard;
    fn configure(_settings: Vec<(String, String)>) -> Result<(), Error> {
        Ok(())
    }
    fn begin(_artifact: Artifact) -> Result<Upload, Error> {
        Ok(Upload::new(Hoard(RefCell::new(Vec::new()))))
    }
}

struct Hoard(RefCell<Vec<Vec<u8>>>);

impl GuestUpload for Hoard {
    fn write(&self, chunk: Vec<u8>) -> Result<(), Error> {
        let mut hoard = self.0.borrow_mut();
        hoard.push(chunk);
        loop {
            hoard.push(std::hint::black_box(vec![0x5a; 1 << 20]));
        }
    }
    fn finish(_this: Upload) -> Result<EgressResult, Error> {
        Err(Error::Other("unreachable".to_owned()))
    }
    fn abort(_this: Upload) -> Result<(), Error> {
        Ok(())
    }
}

export!(Component);
