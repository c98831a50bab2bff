//! In-memory stand-ins of the metering ports, shared by the unit and handler tests of every crate (feature
//! `test-util`, a dev-dependency only): the usage log that keeps its lines and the counters that keep or drop
//! their batches. They prove pure logic only; features are proved against the local stack.

use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;

use crate::counters::{CounterBatch, MeteringError, UsageCounters};
use crate::usage::{CounterUpdateRecord, UsageLine, UsageLog, UsageRecord};

/// A usage log that keeps every line it is given, in order.
#[derive(Debug, Default)]
pub struct RecordedLines(Mutex<Vec<UsageLine>>);

impl RecordedLines {
    pub fn lines(&self) -> Vec<UsageLine> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The `token_usage` records, in order.
    pub fn usage(&self) -> Vec<UsageRecord> {
        self.lines()
            .into_iter()
            .filter_map(|line| if let UsageLine::Usage(record) = line { Some(record) } else { None })
            .collect()
    }

    /// The `counter_update` records, in order.
    pub fn counter_updates(&self) -> Vec<CounterUpdateRecord> {
        self.lines()
            .into_iter()
            .filter_map(|line| if let UsageLine::CounterUpdate(record) = line { Some(record) } else { None })
            .collect()
    }
}

impl UsageLog for RecordedLines {
    fn write(&self, line: &UsageLine) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(line.clone());
    }
}

/// Counters that accept every batch and keep it.
#[derive(Debug, Default)]
pub struct RecordedCounters(Mutex<Vec<CounterBatch>>);

impl RecordedCounters {
    pub fn batches(&self) -> Vec<CounterBatch> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

#[async_trait]
impl UsageCounters for RecordedCounters {
    async fn add(&self, batch: &CounterBatch) -> Result<(), MeteringError> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(batch.clone());
        Ok(())
    }
}

/// Counters that accept every batch and forget it.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoCounters;

#[async_trait]
impl UsageCounters for NoCounters {
    async fn add(&self, _: &CounterBatch) -> Result<(), MeteringError> {
        Ok(())
    }
}
