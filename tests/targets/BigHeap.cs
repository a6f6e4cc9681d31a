// BigHeap: a test target that holds a large managed heap, for the dump benchmark.
//
// Usage: dotnet BigHeap.dll [mebibytes]
//   mebibytes  how much to keep alive on the managed heap (default 1024)
// Allocates that many 1 MiB byte arrays, writes into every page of each so that the memory is
// really resident, keeps them all reachable, prints "ready" and then sleeps until killed.
using System;
using System.Collections.Generic;
using System.Threading;

static class BigHeap
{
    static readonly List<byte[]> kept = new List<byte[]>();

    static int Main(string[] args)
    {
        int mebibytes = args.Length > 0 ? int.Parse(args[0]) : 1024;
        for (int i = 0; i < mebibytes; i++)
        {
            var block = new byte[1 << 20];
            for (int page = 0; page < block.Length; page += 4096)
            {
                block[page] = (byte)(i + page / 4096);
            }
            kept.Add(block);
        }
        Console.WriteLine("ready");
        Console.Out.Flush();
        Thread.Sleep(Timeout.Infinite);
        GC.KeepAlive(kept);
        return 0;
    }
}
