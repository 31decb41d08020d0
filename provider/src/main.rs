//! payment-provider binary: configuration from the environment → telemetry
//! → listen → serve until SIGINT/SIGTERM.

use shop_provider::Config;
use shop_runtime::{CancellationToken, telemetry};

#[tokio::main]
async fn main() {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("payment-provider: {e}");
            std::process::exit(2);
        }
    };
    let telemetry = telemetry::init(Some(config.log_format), &shop_provider::SERVICE, &config.tracing);
    let listener = match tokio::net::TcpListener::bind(config.listen_addr).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("payment-provider: cannot listen on {}: {e}", config.listen_addr);
            std::process::exit(1);
        }
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(shop_runtime::shutdown_on_signal(shutdown.clone()));
    let ran = shop_provider::run(config, listener, shutdown).await;
    telemetry.shutdown().await;
    if let Err(e) = ran {
        eprintln!("payment-provider: {e}");
        std::process::exit(1);
    }
}
