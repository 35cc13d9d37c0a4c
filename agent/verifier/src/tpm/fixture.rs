//! Real output from one swtpm session (tpm2-tools 5.4: `tpm2_createek -G rsa`,
//! `tpm2_createak -G rsa -g sha256 -s rsassa`, `tpm2_pcrextend 16:sha256=00..01`,
//! `tpm2_quote -l sha256:16,23 -q 0011223344556677 -g sha256`), for tests.

/// `tpm2_quote -m`: marshalled TPMS_ATTEST.
pub const QUOTE_MSG: &str = "ff54434780180022000bc4bb6569c4c907fdb5b91c441d29b002a4b60d1c5f2358f7f23af595040a3edc0008001122334455667700000000000019f0000000010000000001201910230016363600000001000b0300008100206e5a4ff3f84705f86e2ffa660b87b74f3ab7a24c1f17291bfba347e25e08ca08";
/// `tpm2_quote -s`: marshalled TPMT_SIGNATURE.
pub const QUOTE_SIG: &str = "0014000b0100b8469e01f9ddd5c22197cd5a40e7337924d4a75dee7366cbdc46e0f4d5c36b8477e58fb4958bed67cdab0e6bcdcb9851d3d7b2341d497eb78c65034c2dde5d10a3d90c18b306fde7c0c1d3495e4edd68c428d4d78487f2ec8243fa1f7f9791d94187c3c2296faf6a34ccee7be4bbc4791fd90343f2b4712483391d6e8eb24e3ecdee98936603dd3edee2ca3a56b82900e40beafb8152258ca22f8a4d8d209df8c725251ff1a8baef26ff7bd89b966cac65e5181358cf8814eb60aeb239e73d8ee8fa42e45c53cbbb78101829c23d258cf0568c8c1f9f279187d658178dceecbacf8fa1e5b73e147cfbc9e6326c87a472ffce0a518e47ed42cdbee3810bf67231";
/// `tpm2_createak -u`: marshalled TPM2B_PUBLIC of the AK.
pub const AK_PUB: &str = "01180001000b00050072000000100014000b0800000000000100c8f566171d325bd8947981855e2ac7a7329ac2e44270fc04ea027762a5df4aa7035528fb532ded30781ef3bb2cfc6701c835633961a5e33058be6ad980364db1582911ed99534cf8d7e3f94110400181dda04dd9df06a5cd2c4e2ec647e17e5f3d53ecda6be00e8419f57a5a5bfd7d703e853e16cdf6fa222d6df997f7eee2adca3a3b2b101a2c974d6cf93838fe4cafd71181e9e837120f0363a3ce98fd107c68a26e2fb5359d8cc714be75ab1e4f1b6ffa9944205a2ba1163a0a75f2bc0c4d7d267029f15432790678a55dd0b84da9192a6781e40bf5dd8cdd86102f8f9d590f6a31b5cdecb7c93e0f5d76eb84cee978d0356bc88db56edd6502b2dc5da817";
/// `tpm2_createak -n`: the AK's name.
pub const AK_NAME: &str = "000bb8419f476fdd5cc997d9ec980f2b5d9777e99478bda1a0b4770659707a0c2faf";
/// Name of the EK (the AK's parent), computed from `tpm2_createek -u`.
pub const EK_NAME: &str = "000b938ba9acc00abe6fbf142e29f0c21a252c55991fa2a96e7ceca96faacc17a9c9";
/// The quote's qualifiedSigner: the AK's qualified name.
pub const AK_QUALIFIED_NAME: &str =
    "000bc4bb6569c4c907fdb5b91c441d29b002a4b60d1c5f2358f7f23af595040a3edc";
/// The nonce passed with `-q`.
pub const NONCE: &str = "0011223344556677";
/// PCR 16 after one extend of 00..01 from zero; PCR 23 was zero.
pub const PCR16: &str = "506b129475473baeac753d929992ca34aebdb26fdb854292df0a2e8835d623f4";
