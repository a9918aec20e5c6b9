pub mod muon;
