//! payment-provider binary: [`shop_provider::serve_from_env`]; exits 2 on
//! bad settings, 1 on any other failure.

#[tokio::main]
async fn main() {
    if let Err(e) = shop_provider::serve_from_env().await {
        eprintln!("payment-provider: {e}");
        let code = match e {
            shop_provider::ServeError::Config(_) => 2,
            _ => 1,
        };
        std::process::exit(code);
    }
}
