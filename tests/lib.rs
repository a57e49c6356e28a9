//! Shared test support lives in integration/.
