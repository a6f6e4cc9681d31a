// HeapKeeper: a test target that keeps a known set of objects alive, for the gcdump tests.
//
// Usage: dotnet HeapKeeper.dll [count [payloadBytes]]
//   count         how many Diagmon.Kept objects to keep alive (default 1000)
//   payloadBytes  the length of the byte array each one holds (default 100; -1: no array)
// A Diagmon.Kept object holds a reference and a long: 32 bytes on a 64-bit runtime. They are all
// reachable from a static list. Prints "ready" once they exist, then sleeps until killed.
using System;
using System.Collections.Generic;
using System.Threading;

namespace Diagmon
{
    sealed class Kept
    {
        public byte[] Payload;
        public long Id;
    }

    static class HeapKeeper
    {
        static readonly List<Kept> kept = new List<Kept>();

        static int Main(string[] args)
        {
            int count = args.Length > 0 ? int.Parse(args[0]) : 1000;
            int payload = args.Length > 1 ? int.Parse(args[1]) : 100;
            kept.Capacity = count;
            for (int i = 0; i < count; i++)
            {
                kept.Add(new Kept { Payload = payload >= 0 ? new byte[payload] : null, Id = i });
            }
            GC.Collect();
            Console.WriteLine("ready");
            Console.Out.Flush();
            Thread.Sleep(Timeout.Infinite);
            GC.KeepAlive(kept);
            return 0;
        }
    }
}
