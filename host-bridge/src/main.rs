//! host-bridge: placeholder until the bridge pipeline lands.
fn main() {
    println!("host-bridge: not built yet (see host-bridge/README.md)");
}
