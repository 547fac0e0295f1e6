pub mod fisco_proxy;
