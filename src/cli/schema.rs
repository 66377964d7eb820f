use std::path::PathBuf;

use super::{EXIT_ERROR, EXIT_OK};
use crate::manifest::schema;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write the schemas into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run(args: Args) -> u8 {
    if let Err(e) = std::fs::create_dir_all(&args.out) {
        eprintln!("rampart: cannot create {}: {e}", args.out.display());
        return EXIT_ERROR;
    }
    for (name, text) in schema::files() {
        let path = args.out.join(&name);
        // Write to a temporary name and rename, so a reader never sees half a schema.
        let tmp = args.out.join(format!(".{name}.tmp"));
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)) {
            eprintln!("rampart: cannot write {}: {e}", path.display());
            return EXIT_ERROR;
        }
        println!("wrote {}", path.display());
    }
    EXIT_OK
}
