package tdx
