/* ProcessPrng for Wine 8, which lacks it.
 *
 * Rust's standard library (1.78 and later) asks bcryptprimitives.dll for ProcessPrng, the
 * system's random number generator; Wine 8 has no such export, so every Rust program built
 * for x86_64-pc-windows-gnu fails to start. This DLL, copied into the Wine prefix's system32
 * by .ci/windows-tests, provides it on top of RtlGenRandom (advapi32's SystemFunction036),
 * which Wine implements. Used only to run our test binaries under Wine in CI. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
