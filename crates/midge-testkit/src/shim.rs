//! TEMPORARY: the announced `midge_broker::core` API, so that the simulator compiles before
//! the core lands. Replaced by `use midge_broker::core::{Core, Connection}`.
#![allow(missing_docs, unreachable_pub, dead_code, clippy::unused_self)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use midge_broker::config::ConfigError;
use midge_broker::{BrokerConfig, BrokerStats, Cluster, Hooks, Store};

#[derive(Debug)]
pub struct Core;

impl Core {
    pub fn new(
        _config: BrokerConfig,
        _hooks: Arc<dyn Hooks>,
        _store: Arc<dyn Store>,
        _cluster: Arc<dyn Cluster>,
        _now: Instant,
    ) -> Result<Arc<Self>, ConfigError> {
        unimplemented!()
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        unimplemented!()
    }
    pub fn handle_timeout(self: &Arc<Self>, _now: Instant) {
        unimplemented!()
    }
    pub fn publish(&self, _m: midge_proto::Message, _now: Instant) -> usize {
        unimplemented!()
    }
    pub fn stop(&self) {
        unimplemented!()
    }
    pub fn save_offline_sessions(&self, _now: Instant) {
        unimplemented!()
    }
    pub fn stats(&self) -> BrokerStats {
        unimplemented!()
    }
}

#[derive(Debug)]
pub struct Connection;

impl Connection {
    pub fn new(_core: &Arc<Core>, _peer: SocketAddr, _now: Instant) -> Self {
        unimplemented!()
    }
    pub fn handle_input(&mut self, _now: Instant, _input: &mut BytesMut) {
        unimplemented!()
    }
    pub fn wants_input(&self) -> bool {
        unimplemented!()
    }
    pub fn handle_wakeup(&mut self, _now: Instant) {
        unimplemented!()
    }
    pub fn handle_timeout(&mut self, _now: Instant) {
        unimplemented!()
    }
    pub fn poll_timeout(&self) -> Option<Instant> {
        unimplemented!()
    }
    pub fn poll_transmit(&mut self, _now: Instant, _out: &mut BytesMut) -> bool {
        unimplemented!()
    }
    pub fn connection_lost(&mut self, _now: Instant) {
        unimplemented!()
    }
    pub fn is_closed(&self) -> bool {
        unimplemented!()
    }
}
