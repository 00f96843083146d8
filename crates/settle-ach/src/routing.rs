//! ABA routing transit numbers: nine digits, the ninth a check digit over
//! the first eight with weights 3, 7, 1.

use std::fmt;

/// A routing number whose check digit holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoutingNumber([u8; 9]);

/// Why a routing number was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RoutingNumberError {
    #[error("a routing number is exactly nine digits")]
    Format,
    #[error("the routing number's check digit does not match")]
    CheckDigit,
}

impl RoutingNumber {
    /// The Federal Reserve Bank's routing number in the sandbox defaults
    /// (the immediate destination of FedACH files); checked by a test.
    pub const SANDBOX_FEDERAL_RESERVE: RoutingNumber = RoutingNumber([2, 3, 1, 3, 8, 0, 1, 0, 4]);
    /// The sandbox originating bank.
    pub const SANDBOX_ODFI: RoutingNumber = RoutingNumber([1, 2, 1, 0, 4, 2, 8, 8, 2]);

    pub fn parse(text: &str) -> Result<RoutingNumber, RoutingNumberError> {
        let bytes = text.as_bytes();
        if bytes.len() != 9 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(RoutingNumberError::Format);
        }
        let mut digits = [0u8; 9];
        for (slot, byte) in digits.iter_mut().zip(bytes) {
            *slot = byte - b'0';
        }
        if check_digit(&digits[..8]) != digits[8] {
            return Err(RoutingNumberError::CheckDigit);
        }
        Ok(RoutingNumber(digits))
    }

    /// The first eight digits: what an entry's RDFI field and the entry hash use.
    pub fn identification(&self) -> String {
        self.0[..8].iter().map(|d| char::from(b'0' + d)).collect()
    }

    pub fn check(&self) -> u8 {
        self.0[8]
    }
}

/// The check digit of eight digits (each 0..=9).
pub fn check_digit(first_eight: &[u8]) -> u8 {
    const WEIGHTS: [u32; 8] = [3, 7, 1, 3, 7, 1, 3, 7];
    let sum: u32 = first_eight.iter().zip(WEIGHTS).map(|(d, w)| u32::from(*d) * w).sum();
    // `sum % 10` is below 10, so the cast cannot truncate.
    ((10 - sum % 10) % 10) as u8
}

impl fmt::Display for RoutingNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.0 {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_routing_numbers_pass() {
        for text in ["011000015", "021000021", "121042882", "231380104", "091400606", "026009593"] {
            let parsed = RoutingNumber::parse(text).expect(text);
            assert_eq!(parsed.to_string(), text);
        }
        assert_eq!(RoutingNumber::parse("121042882").map(|r| r.identification()), Ok("12104288".to_string()));
    }

    #[test]
    fn the_sandbox_constants_are_valid() {
        for r in [RoutingNumber::SANDBOX_FEDERAL_RESERVE, RoutingNumber::SANDBOX_ODFI] {
            assert_eq!(RoutingNumber::parse(&r.to_string()), Ok(r));
        }
    }

    #[test]
    fn a_wrong_check_digit_or_shape_is_refused() {
        assert_eq!(RoutingNumber::parse("121042883"), Err(RoutingNumberError::CheckDigit));
        assert_eq!(RoutingNumber::parse("12104288"), Err(RoutingNumberError::Format));
        assert_eq!(RoutingNumber::parse("12104288a"), Err(RoutingNumberError::Format));
        assert_eq!(RoutingNumber::parse("１21042882"), Err(RoutingNumberError::Format));
    }
}
